"""The few-step student (models/student.py): forward-only on the classifier, conditioned on digit and guidance,
initialised from the teacher's shared weights; the distillation's pieces."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from c2d.models.classifier import NoiseConditionedClassifier
from c2d.models.config import SIZES
from c2d.models.sde import alpha_sigma
from c2d.models.student import Student, data_prediction, ddim_step, init_from_teacher, pseudo_huber, student_config
from c2d.models.subnet import ScoreSubnet, SingleBackbone
from c2d.runtime.sde import SDEConfig

TINY = SIZES["tiny"]
SDE = SDEConfig()


def teacher_and_student(seed: int = 0):
    torch.manual_seed(seed)
    classifier = NoiseConditionedClassifier(TINY.classifier)
    cfg = dataclasses.replace(TINY.subnet, output="edm", data_mean=-0.6, data_var=0.2)
    teacher = SingleBackbone(classifier, ScoreSubnet(cfg, classifier.tap_channels), SDE)
    for p in teacher.subnet.parameters():  # a trained-looking teacher: non-zero everywhere, the head included
        torch.nn.init.normal_(p, std=0.05)
    student = Student(classifier, student_config(cfg), SDE, n_classes=10)
    return teacher, student


def onehot(digits):
    return torch.nn.functional.one_hot(torch.tensor(digits), 10).float()


def test_student_takes_no_gradient_through_the_classifier_and_hears_digit_and_guidance():
    _, student = teacher_and_student()
    for p in student.condition.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.nn.init.normal_(student.subnet.head.weight, std=0.1)
    x = torch.randn(2, 1, 80, 88, requires_grad=True)
    t = torch.tensor([0.5, 0.5])
    eps = student(x, t, onehot([3, 3]), torch.tensor([2.0, 2.0]))
    assert eps.shape == x.shape
    assert not any(p.requires_grad for p in student.classifier.parameters())
    other_digit = student(x, t, onehot([3, 7]), torch.tensor([2.0, 2.0]))
    other_gamma = student(x, t, onehot([3, 3]), torch.tensor([2.0, 0.0]))
    assert torch.allclose(eps[0], other_digit[0]) and not torch.allclose(eps[1], other_digit[1])
    assert torch.allclose(eps[0], other_gamma[0]) and not torch.allclose(eps[1], other_gamma[1])


def test_student_refuses_gradient_taps_or_another_output():
    teacher, _ = teacher_and_student()
    for cfg in (teacher.subnet.cfg, dataclasses.replace(teacher.subnet.cfg, use_gradient_taps=False, output="eps")):
        with pytest.raises(ValueError, match="forward taps only"):
            Student(teacher.classifier, cfg, SDE, 10)


def test_the_guidance_seed_is_the_gradient_of_log_p_at_the_classifier_head():
    """Closed form from the forward pass = autograd: d log p(y | x) / d pooled, and h w times d / d GN-output."""
    from c2d.models.student import guidance_seed

    classifier = NoiseConditionedClassifier(TINY.classifier).double()
    torch.nn.init.normal_(classifier.head.weight, std=0.3)
    x, t, y1 = torch.randn(3, 1, 80, 88).double(), torch.tensor([0.2, 0.5, 0.9]).double(), onehot([0, 4, 9]).double()
    with torch.no_grad():
        logits, taps = classifier.forward_with_taps(x, t)
    a = classifier.head_norm(taps[-1]).detach().requires_grad_(True)
    pooled = torch.nn.functional.silu(a).mean(dim=(2, 3))
    pooled.retain_grad()
    (classifier.head(pooled).log_softmax(1) * y1).sum().backward()
    vector, spatial = guidance_seed(classifier, logits, taps[-1], y1)
    assert torch.allclose(vector.double(), pooled.grad, atol=1e-5)
    assert torch.allclose(spatial.double(), a.grad * a.shape[2] * a.shape[3], atol=1e-5)
    assert vector.abs().max() > 1e-3  # not trivially zero


def test_the_seed_scale_is_sigma_t():
    from c2d.models.sde import alpha_sigma
    from c2d.models.student import seed_sigma

    t = torch.tensor([SDE.t_min, 0.1, 0.5, 1.0])
    assert torch.allclose(seed_sigma(t, SDE), alpha_sigma(t, SDE)[1], rtol=1e-3)


def test_a_seed_student_starts_as_the_digit_student_and_its_seed_carries_digit_and_gamma():
    teacher, digit_student = teacher_and_student()
    seeded = Student(teacher.classifier, digit_student.subnet.cfg, SDE, 10, conditioning="seed")
    for student in (digit_student, seeded):
        init_from_teacher(student, teacher)
    x, t = torch.randn(2, 1, 80, 88), torch.tensor([0.4, 0.4])
    with torch.no_grad():
        same = [m(x, t, onehot([3, 7]), torch.tensor([2.0, 2.0])) for m in (digit_student, seeded)]
    assert torch.equal(*same)  # the seed's projections start at zero
    assert set(seeded.trainable()) == {"subnet", "condition", "seed"} and set(digit_student.trainable()) == {"subnet", "condition"}
    for p in seeded.seed.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.nn.init.normal_(seeded.subnet.head.weight, std=0.1)
    xx = x[:1].repeat(2, 1, 1, 1)  # the same x_t, two digits; the digit embedding is still zero
    with torch.no_grad():
        guided = seeded(xx, t, onehot([3, 7]), torch.tensor([2.0, 2.0]))
        unguided = seeded(xx, t, onehot([3, 7]), torch.tensor([0.0, 0.0]))
    assert not torch.allclose(guided[0], guided[1])  # the seed carries the digit
    assert torch.allclose(unguided[0], unguided[1], atol=1e-6)  # and scales with gamma: none at gamma 0
    with pytest.raises(ValueError, match="conditioning"):
        Student(teacher.classifier, digit_student.subnet.cfg, SDE, 10, conditioning="attention")


def test_checkpoints_from_before_a_setting_existed_keep_their_recipe():
    """Resuming compares recipes: a header without objective (conditioning) means consistency (digit)."""
    from c2d.models.checkpoint import student_recipe as _recipe
    from c2d.models.student import DistillConfig

    old = {"grid": 40, "skip": 4, "gamma_max": 5.0, "huber_c": 0.03, "teacher_fp32": True}
    assert _recipe({"distill": old}) == _recipe({"distill": dataclasses.asdict(DistillConfig())})
    assert _recipe({"distill": {**old, "objective": "guided"}}) == _recipe({"distill": dataclasses.asdict(DistillConfig(objective="guided"))})
    assert _recipe({"distill": old}) != _recipe({"distill": dataclasses.asdict(DistillConfig(conditioning="seed"))})


def test_init_from_teacher_copies_the_shared_decoder_and_starts_unconditioned():
    teacher, student = teacher_and_student()
    copied = init_from_teacher(student, teacher)
    assert any(k.startswith("stages.") for k in copied) and "head.weight" in copied
    assert not any(".proj_g." in k or ".attn." in k for k in copied)  # gradient-tap fusions have no counterpart
    for k in copied:
        assert torch.equal(student.subnet.state_dict()[k], teacher.subnet.state_dict()[k])
    x, t = torch.randn(2, 1, 80, 88), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        a = student(x, t, onehot([1, 2]), torch.tensor([0.0, 3.0]))
        b = student(x, t, onehot([5, 9]), torch.tensor([4.0, 1.0]))
    assert torch.equal(a, b)  # the condition embedding starts at zero


def test_a_ddim_step_with_the_exact_eps_lands_on_the_same_data_prediction():
    """For a single point x_0 the exact eps is (x_t - alpha x_0) / sigma: every DDIM step keeps x_0 fixed, and the
    data prediction recovers it."""
    x0 = torch.randn(3, 1, 4, 5)
    t_hi, t_lo = torch.full((3,), 0.8), torch.full((3,), 0.3)
    alpha, sigma = alpha_sigma(t_hi, SDE)
    z = torch.randn_like(x0)
    x_hi = alpha.view(-1, 1, 1, 1) * x0 + sigma.view(-1, 1, 1, 1) * z
    x_lo = ddim_step(z, x_hi, t_hi, t_lo, SDE)
    a_lo, s_lo = alpha_sigma(t_lo, SDE)
    assert torch.allclose(x_lo, a_lo.view(-1, 1, 1, 1) * x0 + s_lo.view(-1, 1, 1, 1) * z, atol=1e-5)
    assert torch.allclose(data_prediction(z, x_lo, t_lo, SDE), x0, atol=1e-4)


def test_pseudo_huber_is_quadratic_near_zero_and_linear_far_away():
    zero = torch.zeros(1000)
    assert pseudo_huber(zero, zero).item() == 0.0
    small, large = pseudo_huber(zero + 0.003, zero), pseudo_huber(zero + 3.0, zero)
    assert small.item() == pytest.approx(0.003**2 / (2 * 0.03), rel=0.01)
    assert large.item() == pytest.approx(3.0 - 0.03, rel=0.01)


def test_the_stable_data_prediction_equals_the_direct_formula():
    from c2d.models.precond import edm_data_prediction, eps_from_output

    torch.manual_seed(0)
    x, raw = torch.randn(4, 1, 3, 3, dtype=torch.float64), torch.randn(4, 1, 3, 3, dtype=torch.float64)
    alpha, sigma = alpha_sigma(torch.tensor([0.999, 0.7, 0.3, 1e-3], dtype=torch.float64), SDE)
    eps = eps_from_output("edm", raw, x, alpha, sigma, -0.6, 0.2)
    direct = (x - sigma.view(-1, 1, 1, 1) * eps) / alpha.view(-1, 1, 1, 1)
    assert torch.allclose(edm_data_prediction(raw, x, alpha, sigma, -0.6, 0.2), direct, atol=1e-9)


@pytest.mark.parametrize("objective", ["guided", "consistency"])
def test_distillation_loss_trains_the_student_and_never_the_teacher_or_classifier(objective):
    from c2d.models.student import DistillConfig, distillation_loss

    teacher, student = teacher_and_student()
    init_from_teacher(student, teacher)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss_fn = distillation_loss(teacher, SDE, 10, DistillConfig(objective=objective, grid=8, skip=2))
    x0, y = torch.rand(4, 1, 80, 88) * 2 - 1, torch.tensor([0, 3, 5, 9])
    params = list(student.trainable().parameters())
    assert all(p.requires_grad for p in params) and not any(p.requires_grad for p in student.classifier.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(6):
        loss = loss_fn(student, x0, y, torch.Generator().manual_seed(0))  # the same draws every step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items())


def test_the_guided_objective_is_the_weighted_eps_error_against_the_guided_teacher():
    """Stage 1's loss, recomputed by hand from the same draws: sum over examples of (1 / c_out^2) mean (eps_S - eps_T)^2."""
    from c2d.models.precond import c_out
    from c2d.models.sde import perturb, sample_t
    from c2d.models.student import DistillConfig, distillation_loss

    teacher, student = teacher_and_student(1)
    cfg = DistillConfig(objective="guided", gamma_max=4.0)
    x0, y = torch.rand(3, 1, 80, 88) * 2 - 1, torch.tensor([1, 4, 7])
    loss = distillation_loss(teacher, SDE, 10, cfg)(student, x0, y, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    t = sample_t(3, SDE, gen)
    gamma = 4.0 * torch.rand(3, generator=gen)
    x_t = perturb(x0, t, SDE, torch.randn(x0.shape, generator=gen))
    eps_t, _ = teacher.guided(x_t, t, onehot([1, 4, 7]), gamma)
    with torch.no_grad():
        eps_s = student(x_t, t, onehot([1, 4, 7]), gamma)
    per = (eps_s - eps_t.detach()).pow(2).mean(dim=(1, 2, 3)) / c_out(*alpha_sigma(t, SDE), 0.2).pow(2)
    assert torch.allclose(loss.detach(), per.mean(), rtol=1e-4)
    with pytest.raises(ValueError, match="objective"):
        distillation_loss(teacher, SDE, 10, DistillConfig(objective="progressive"))


def test_train_student_through_the_cli_resumes_and_refuses_an_eps_teacher(tmp_path, features_file):
    """A tiny EDM teacher, then `c2d train student`: released file rebuilds; the run resumes; an eps teacher and a
    resume with another teacher setting are refused with the reason."""
    from click.testing import CliRunner

    from c2d.cli import main
    from c2d.models.checkpoint import build_student, load_checkpoint

    runner = CliRunner()
    common = ["--steps", "2", "--batch-size", "2", "--features", str(features_file), "--fp32"]
    tiny = ["--size", "tiny", *common]
    assert runner.invoke(main, ["train", "classifier", "-o", str(tmp_path / "c.pt"), *tiny]).exit_code == 0
    for precond in ("edm", "eps"):
        res = runner.invoke(
            main, ["train", "subnet", "--classifier", str(tmp_path / "c.pt"), "--precond", precond, "-o", str(tmp_path / f"{precond}.pt"), *tiny]
        )
        assert res.exit_code == 0, res.output
    student = ["train", "student", "--teacher", str(tmp_path / "edm.pt"), "--grid", "6", "--skip", "2", "-o", str(tmp_path / "s.pt")]
    res = runner.invoke(main, [*student, "--release", str(tmp_path / "s.rel.pt"), *common])
    assert res.exit_code == 0, res.output
    assert "step 2" in res.output and "consistency-distilling" in res.output
    ckpt = load_checkpoint(tmp_path / "s.rel.pt", "student")
    assert ckpt["teacher"]["file"] == "edm.pt" and ckpt["distill"]["skip"] == 2
    model = build_student(ckpt)
    assert not model.subnet.cfg.use_gradient_taps
    res = runner.invoke(main, [*student, "--steps", "3", "--batch-size", "2", "--features", str(features_file), "--fp32"])
    assert res.exit_code == 0 and "step 3" in res.output  # resumed from step 2
    res = runner.invoke(main, [*student[:-2], "--skip", "3", "-o", str(tmp_path / "s.pt"), *common])
    assert res.exit_code != 0 and "other settings" in res.output
    res = runner.invoke(main, ["train", "student", "--teacher", str(tmp_path / "eps.pt"), "-o", str(tmp_path / "e.pt"), *common])
    assert res.exit_code != 0 and "--precond edm" in res.output and not (tmp_path / "e.pt").exists()
    # two stages: guided distillation, then consistency distillation started from it
    stage1 = ["train", "student", "--teacher", str(tmp_path / "edm.pt"), "--objective", "guided", "-o", str(tmp_path / "g.pt"), *common]
    res = runner.invoke(main, stage1)
    assert res.exit_code == 0 and "guided eps" in res.output, res.output
    assert load_checkpoint(tmp_path / "g.pt", "student")["distill"]["objective"] == "guided"
    res = runner.invoke(main, [*stage1[: -2 - len(common)], "--teacher-bf16", "-o", str(tmp_path / "g16.pt"), *common])
    assert res.exit_code == 0 and load_checkpoint(tmp_path / "g16.pt", "student")["distill"]["teacher_fp32"] is False, res.output
    seeded = [*stage1[: -2 - len(common)], "--conditioning", "seed", "-o", str(tmp_path / "gs.pt"), *common]
    res = runner.invoke(main, seeded)
    assert res.exit_code == 0 and build_student(load_checkpoint(tmp_path / "gs.pt", "student")).seed is not None, res.output
    res = runner.invoke(main, [*student[:-2], "--init-from", str(tmp_path / "gs.pt"), "-o", str(tmp_path / "cs.pt"), *common])
    assert res.exit_code != 0 and "pass --conditioning seed" in res.output and not (tmp_path / "cs.pt").exists()
    res = runner.invoke(main, [*student[:-2], "--init-from", str(tmp_path / "g.pt"), "-o", str(tmp_path / "c2.pt"), *common])
    assert res.exit_code == 0 and "g.pt (step 2)" in res.output, res.output
    assert load_checkpoint(tmp_path / "c2.pt", "student")["init_from"]["file"] == "g.pt"
    res = runner.invoke(main, [*student[:-2], "-o", str(tmp_path / "c2.pt"), "--steps", "3", *common[2:]])  # resumed, no --init-from
    assert res.exit_code == 0 and "step 3" in res.output, res.output
    assert load_checkpoint(tmp_path / "c2.pt", "student")["init_from"]["file"] == "g.pt"
    res = runner.invoke(main, [*stage1[: -2 - len(common)], "-o", str(tmp_path / "s.pt"), *common])  # resuming a consistency run as guided
    assert res.exit_code != 0 and "other settings" in res.output
    other = ["train", "subnet", "--classifier", str(tmp_path / "c.pt"), "--precond", "edm", "--seed", "7", "-o", str(tmp_path / "edm2.pt"), *tiny]
    assert runner.invoke(main, other).exit_code == 0
    res = runner.invoke(
        main,
        ["train", "student", "--teacher", str(tmp_path / "edm2.pt"), "--init-from", str(tmp_path / "g.pt"), "-o", str(tmp_path / "x.pt"), *common],
    )
    assert res.exit_code != 0 and "another teacher" in res.output and not (tmp_path / "x.pt").exists()


def test_the_distillation_monitor_sees_a_student_that_ignores_the_digit_and_one_that_copies_the_teacher():
    from c2d.models.student import MONITOR_TIMES, distillation_monitor

    teacher, student = teacher_and_student(2)
    init_from_teacher(student, teacher)  # a non-zero output head
    torch.nn.init.normal_(student.condition.digit.weight, std=0.5)  # a student that hears the digit
    x0 = torch.rand(2, 1, 80, 88) * 2 - 1

    class Copy:  # a "teacher" whose guided eps is this student's own
        def guided(self, x, t, y, g):
            with torch.no_grad():
                return student(x, t, y, g), None

    same = distillation_monitor(Copy(), student, x0)(student.trainable())
    assert set(same["eps_error"]) == {f"{t:g}" for t in MONITOR_TIMES}
    assert all(e < 1e-5 for e in same["eps_error"].values()) and all(c > 0.999 for c in same["digit_corr"].values())
    torch.nn.init.zeros_(student.condition.digit.weight)  # now deaf to the digit: its digit part is zero
    ignored = distillation_monitor(teacher, student, x0)(student.trainable())
    assert all(abs(c) < 1e-3 for c in ignored["digit_corr"].values())
