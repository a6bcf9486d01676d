import dataclasses

import numpy as np
import pytest
import torch

from c2d.models.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    build_classifier,
    build_single_backbone,
    build_unet,
    load_checkpoint,
    release,
)
from c2d.models.sde import dsm_loss, perturb
from c2d.models.train import TrainConfig, make_job, train
from c2d.runtime.sde import SDEConfig

SDE = SDEConfig()
LOW_NOISE = SDEConfig(beta_max=1.0)  # sigma_1 ~ 0.5: lets a tiny classifier learn within a test's budget


def quick(steps, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=16, lr=kw.pop("lr", 2e-3), warmup=5, bf16=False, ckpt_every=10_000, **kw)


@pytest.fixture
def classifier_ckpt(tmp_path, synth):
    path = tmp_path / "classifier.pt"
    train(make_job("classifier", "tiny", LOW_NOISE), synth, quick(100, lr=3e-3), path, progress=False)
    return path


@pytest.mark.slow
def test_classifier_beats_chance_on_a_tiny_subset(classifier_ckpt, synth):
    classifier = build_classifier(load_checkpoint(classifier_ckpt)).eval()
    x, y = torch.from_numpy(synth.x), torch.from_numpy(synth.y)
    t = torch.full((len(x),), 0.05)
    with torch.no_grad():
        acc = (classifier(perturb(x, t, SDE, torch.randn_like(x)), t).argmax(1) == y).float().mean().item()
    assert acc > 0.3  # chance is 0.1


def fixed_dsm_loss(model, synth, seed=0) -> float:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(synth.x[:40])
    t = 0.05 + 0.9 * torch.rand(len(x0), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    model.eval()
    with torch.no_grad():
        return dsm_loss(model(perturb(x0, t, SDE, noise), t), noise).item()


@pytest.mark.slow
def test_dsm_loss_falls_within_a_few_dozen_steps(tmp_path, synth):
    job = make_job("unet", "tiny", SDE)
    before = fixed_dsm_loss(job.forward_module, synth)
    train(job, synth, quick(40), tmp_path / "unet.pt", progress=False)
    after = fixed_dsm_loss(build_unet(load_checkpoint(tmp_path / "unet.pt")), synth)
    assert after < 0.8 * before


@pytest.mark.slow
def test_subnet_training_leaves_the_classifier_bit_identical(tmp_path, synth, classifier_ckpt):
    job = make_job("subnet", "tiny", SDE, classifier_path=classifier_ckpt)
    classifier = job.forward_module.classifier
    frozen = {k: v.clone() for k, v in classifier.state_dict().items()}
    # one manual step: only subnet parameters receive gradients
    loss = job.loss(job.forward_module.train(), torch.from_numpy(synth.x[:8]), torch.from_numpy(synth.y[:8]), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in classifier.parameters())
    assert all(p.grad is not None for p in job.trainable.parameters())
    before = fixed_dsm_loss(job.forward_module, synth)
    train(job, synth, quick(40), tmp_path / "subnet.pt", progress=False)
    for k, v in classifier.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    rebuilt = build_single_backbone(load_checkpoint(tmp_path / "subnet.pt"))
    for k, v in rebuilt.classifier.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert fixed_dsm_loss(rebuilt, synth) < 0.8 * before


@pytest.mark.slow
def test_checkpoint_rebuilds_an_identical_model_from_the_file_alone(tmp_path, classifier_ckpt):
    ckpt = load_checkpoint(classifier_ckpt, "classifier")
    a, b = build_classifier(ckpt).eval(), build_classifier(load_checkpoint(classifier_ckpt)).eval()
    x, t = torch.randn(2, 1, 80, 88), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(a(x, t), b(x, t))
    atomic_torch_save(release(ckpt), tmp_path / "released.pt")
    c = build_classifier(load_checkpoint(tmp_path / "released.pt")).eval()
    with torch.no_grad():
        assert torch.equal(a(x, t), c(x, t))


@pytest.mark.slow
def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, classifier_ckpt):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(classifier_ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_mismatched_checkpoint_gives_a_clear_error(tmp_path, classifier_ckpt):
    with pytest.raises(CheckpointError, match="expected 'subnet'"):
        load_checkpoint(classifier_ckpt, "subnet")
    ckpt = load_checkpoint(classifier_ckpt)
    ckpt["config"]["encoder"]["base_width"] = 16  # weights no longer fit the config
    with pytest.raises(CheckpointError, match="do not match"):
        build_classifier(ckpt)
    newer = dict(ckpt, format=99)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "newer.pt")


def test_unpickling_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "kind": "classifier", "payload": np.dtype("float32").__class__}, path)
    with pytest.raises(CheckpointError, match="corrupt or unsafe"):
        load_checkpoint(path)


@pytest.mark.slow
def test_training_resumes_after_a_crash_exactly_where_it_stopped(tmp_path, synth):
    cfg = dataclasses.replace(quick(10, seed=3), ckpt_every=5)
    crashing = make_job("classifier", "tiny", SDE)
    calls = {"n": 0}
    real_loss = crashing.loss

    def loss_that_crashes_at_step_7(*args):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated crash")
        return real_loss(*args)

    crashing.loss = loss_that_crashes_at_step_7
    out = tmp_path / "c.pt"
    with pytest.raises(KeyboardInterrupt):
        train(crashing, synth, cfg, out, progress=False)
    assert load_checkpoint(out)["step"] == 5
    train(make_job("classifier", "tiny", SDE), synth, cfg, out, progress=False)
    resumed = load_checkpoint(out)
    train(make_job("classifier", "tiny", SDE), synth, cfg, tmp_path / "straight.pt", progress=False)
    straight = load_checkpoint(tmp_path / "straight.pt")
    assert resumed["step"] == straight["step"] == 10
    # the file says how it was made: one record per process, steps and machine, the crashed run's up to its checkpoint
    assert [r["steps"] for r in resumed["runs"]] == [[0, 5], [5, 10]] and [r["steps"] for r in straight["runs"]] == [[0, 10]]
    assert all(r["cpu"] and r["seconds"] >= 0 and r["threads"] >= 1 for r in resumed["runs"])
    for k in straight["model"]:
        torch.testing.assert_close(resumed["model"][k], straight["model"][k], rtol=1e-5, atol=1e-6)
    atomic_torch_save(release(resumed), tmp_path / "r.pt")
    assert load_checkpoint(tmp_path / "r.pt")["runs"] == resumed["runs"]
    with pytest.raises(CheckpointError, match="released"):
        train(make_job("classifier", "tiny", SDE), synth, quick(12), tmp_path / "r.pt", progress=False)


@pytest.mark.slow
def test_channels_last_training_is_the_same_training(tmp_path, synth):
    """--channels-last changes the memory layout only: a few subnet steps give the same weights as the default."""
    classifier_ckpt = tmp_path / "classifier.pt"  # barely trained: only the layout's effect is under test
    train(make_job("classifier", "tiny", LOW_NOISE), synth, quick(2), classifier_ckpt, progress=False)
    weights = {}
    for channels_last in (False, True):
        job = make_job("subnet", "tiny", SDE, classifier_path=classifier_ckpt)
        out = tmp_path / f"subnet-{channels_last}.pt"
        train(job, synth, quick(5, channels_last=channels_last), out, progress=False)
        weights[channels_last] = load_checkpoint(out)["model"]
    assert weights[True].keys() == weights[False].keys()
    for k, v in weights[False].items():
        torch.testing.assert_close(weights[True][k], v, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("kind", ["evaluator", "vocoder"])
def test_channels_last_is_refused_where_it_does_not_apply(tmp_path, kind):
    from click.testing import CliRunner

    from c2d.cli import main

    res = CliRunner().invoke(main, ["train", kind, "--channels-last", "-o", str(tmp_path / "o.pt")])
    assert res.exit_code == 2 and "No such option '--channels-last'" in res.output, res.output
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["subnet", "unet"])
def test_edm_preconditioned_training_from_the_cli_records_it_and_rebuilds(tmp_path, features_file, classifier_ckpt, kind):
    """`c2d train subnet|unet --precond edm`: the loss falls, the config records the parameterisation and the
    training data's moments, and the file rebuilds the same eps predictor."""
    import json

    from click.testing import CliRunner

    from c2d.cli import main
    from c2d.models.unet import TwoModel

    out = tmp_path / f"{kind}.pt"
    extra = ["--classifier", str(classifier_ckpt)] if kind == "subnet" else []
    res = CliRunner().invoke(
        main,
        [
            "train",
            kind,
            "--size",
            "tiny",
            "--precond",
            "edm",
            "--steps",
            "60",
            "--batch-size",
            "8",
            "--fp32",
            "--features",
            str(features_file),
            "-o",
            str(out),
        ]
        + extra,
    )
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(out)
    cfg = ckpt["config"]
    assert cfg["output"] == "edm" and cfg["data_var"] > 0 and cfg["data_mean"] < 0  # normalised log-Mels sit below 0
    losses = [json.loads(line)["loss"] for line in out.with_suffix(".pt.log").read_text().splitlines()]
    assert losses[-1] < losses[0]
    x, t = torch.randn(2, 1, 80, 88), torch.tensor([0.3, 0.9])
    if kind == "subnet":
        model = build_single_backbone(ckpt)
    else:
        model = TwoModel(build_unet(ckpt), build_classifier(load_checkpoint(classifier_ckpt)), SDE)
    model.eval()
    from c2d.models.precond import gaussian_eps
    from c2d.models.sde import alpha_sigma

    eps = model(x, t)
    skip = gaussian_eps(x, *alpha_sigma(t, SDE), cfg["data_mean"], cfg["data_var"])
    assert eps.shape == x.shape and not torch.allclose(eps, skip)  # the trained residual is in


@pytest.mark.slow
def test_fine_tuning_with_eps_weighting_is_recorded_and_resumes_only_with_it(tmp_path, features_file, classifier_ckpt):
    """--init-from an EDM subnet with --loss-weighting eps: the header says so; resuming that file with the default
    weighting is refused and leaves it as it was."""
    from click.testing import CliRunner

    from c2d.cli import main

    def run(out, *extra):
        args = ["train", "subnet", "--size", "tiny", "--classifier", str(classifier_ckpt), "--precond", "edm", "--steps", "4"]
        args += ["--batch-size", "4", "--fp32", "--features", str(features_file), "-o", str(out), *extra]
        return CliRunner().invoke(main, args)

    base, tuned = tmp_path / "edm.pt", tmp_path / "tuned.pt"
    assert run(base).exit_code == 0
    assert "loss_weighting" not in load_checkpoint(base)
    res = run(tuned, "--init-from", str(base), "--loss-weighting", "eps")
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(tuned)
    assert ckpt["loss_weighting"] == "eps" and ckpt["init_from"]["file"] == "edm.pt"
    before = tuned.read_bytes()
    res = run(tuned, "--steps", "8")
    assert res.exit_code != 0 and "--loss-weighting eps, not output" in res.output, res.output
    assert tuned.read_bytes() == before


def test_precond_is_refused_where_it_does_not_apply(tmp_path):
    from click.testing import CliRunner

    from c2d.cli import main

    for kind, option in [
        ("classifier", "--precond"),
        ("vocoder", "--init-from"),
        ("evaluator", "--channels-last"),
        ("audio-evaluator", "--features"),
    ]:
        res = CliRunner().invoke(main, ["train", kind, option, "x", "-o", str(tmp_path / "o.pt")])
        assert res.exit_code == 2 and f"No such option '{option}'" in res.output, res.output
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.slow
def test_classifier_training_logs_noisy_test_accuracy_and_starts_from_another_run(tmp_path, synth, classifier_ckpt):
    """--init-from starts from another classifier's weights (recorded in the file); the log carries the test
    accuracy at every reported noise level each checkpoint."""
    import json

    features_file = tmp_path / "features.npz"  # a quarter of the synthetic clips as the test split
    np.savez_compressed(features_file, x=synth.x, y=synth.y, speakers=synth.speakers, is_test=np.arange(len(synth.y)) % 4 == 0)

    from click.testing import CliRunner

    from c2d.cli import main
    from c2d.models.checkpoint import state_sha256

    out = tmp_path / "longer.pt"
    res = CliRunner().invoke(
        main,
        [
            "train",
            "classifier",
            "--size",
            "tiny",
            "--init-from",
            str(classifier_ckpt),
            "--steps",
            "50",
            "--batch-size",
            "8",
            "--lr",
            "1e-9",
            "--fp32",
            "--ckpt-every",
            "50",
            "--features",
            str(features_file),
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    src, ckpt = load_checkpoint(classifier_ckpt), load_checkpoint(out)
    assert ckpt["init_from"]["sha256"] == state_sha256(src["ema"] if "ema" in src else src["model"])
    assert ckpt["init_from"]["step"] == 100
    # with a negligible learning rate the weights barely move: it really started from the source's weights
    for k, v in src["ema"].items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(ckpt["model"][k], v, rtol=1e-4, atol=1e-5)
    record = json.loads(out.with_suffix(".pt.log").read_text().splitlines()[-1])
    assert set(record["accuracy"]) == {"0", "0.25", "0.5", "0.75", "1"}
    assert all(0.0 <= a <= 1.0 for a in record["accuracy"].values())
    res = CliRunner().invoke(
        main,
        [
            "train",
            "unet",
            "--size",
            "small",
            "--init-from",
            str(classifier_ckpt),
            "--steps",
            "1",
            "--features",
            str(features_file),
            "-o",
            str(tmp_path / "u.pt"),
        ],
    )
    assert res.exit_code == 1 and "another unet config" not in res.output and "is a 'classifier' checkpoint" in res.output, res.output
