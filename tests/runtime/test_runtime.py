"""The on-device runtime: parity with PyTorch, no torch, backends, bad input, WAV out."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from c2d.cli import main
from c2d.models.checkpoints import SHIPPED_SUBNET
from c2d.runtime import load
from c2d.runtime.audio import denormalize, normalize_peak, resample, wave_problems
from c2d.runtime.backends import BackendOptions, BackendUnavailable, onnx_io_shapes, open_backend
from c2d.runtime.backends.ort import check_available, provider_list
from c2d.runtime.backends.tensorrt import buffer_plan, engine_cache_key, make_profile
from c2d.runtime.bundle import BundleError, read_manifest
from c2d.runtime.contract import LABELS, MANIFEST_FILE
from c2d.runtime.generate import GenerationError, default_bundle, parse_digit

SHIPPED = default_bundle()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen():
    return load(backend="ort")  # the reference comparison is for ORT (a deployment.json on this machine may choose another)


@pytest.mark.slow
def test_shipped_bundle_matches_the_pytorch_reference_sampler(gen):
    """Same noise, 100 EM steps, guided: the ORT runtime's log-Mel within 1e-3 (relative) of PyTorch."""
    from c2d.models.checkpoint import build_single_backbone, load_checkpoint, sde_from
    from c2d.models.sampling import reference_sample

    source = read_manifest(SHIPPED).checkpoints["subnet"]["file"]
    assert source == SHIPPED_SUBNET  # the package's bundle is the shipped generator, not the 4,000-step ablation
    ckpt = load_checkpoint(ROOT / "models" / "checkpoints" / source)
    ref = reference_sample(build_single_backbone(ckpt), sde_from(ckpt), [5, 6], [7, 2], gen.meta.default_guidance, 100)
    ours = gen.sample(["seven", "2"], seed=5, steps=100, sampler="em")
    ref_mel = denormalize(ref[:, 0], gen.meta.mel)
    assert np.abs(ours.log_mel - ref_mel).max() / np.abs(ref_mel).max() <= 1e-3


def test_samples_do_not_depend_on_batch_composition(gen):
    together = gen.sample(["1", "2", "3"], seed=5, steps=4, sampler="em", batch_size=3)
    alone = gen.sample("3", seed=7, steps=4, sampler="em")
    np.testing.assert_allclose(together.log_mel[2], alone.log_mel[0], rtol=1e-4, atol=1e-4)


def test_generate_api_returns_one_second_waveforms(gen):
    audio = gen.generate("nine", count=2, steps=5, sampler="ancestral")
    assert audio.shape == (2, gen.meta.mel.clip_samples) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0 and not np.array_equal(audio[0], audio[1])


def test_wave_problems_names_length_silence_and_clipping():
    rate = 8000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    assert wave_problems(tone, rate) == []
    assert wave_problems(tone[: rate // 2], rate) == ["0.500 s long, expected 1 s"]
    assert wave_problems(1e-4 * tone, rate)[0].startswith("silent")
    assert wave_problems(np.clip(5 * tone, -1, 1), rate)[0].startswith("clipped")
    assert wave_problems(np.full(rate, np.nan), rate) == ["non-finite samples"]


def test_normalize_peak_levels_each_wave_and_caps_the_gain():
    waves = np.stack([np.linspace(-2, 2, 100), np.linspace(-0.01, 0.01, 100), np.full(100, 1e-9)]).astype(np.float32)
    out = normalize_peak(waves, peak_dbfs=-6.0, max_gain_db=40.0)
    assert np.allclose(np.abs(out[:2]).max(axis=1), 10 ** (-6 / 20), rtol=1e-6)
    assert np.allclose(out[2], 1e-7) and out.dtype == np.float32  # +40 dB at most


@pytest.mark.slow
def test_shipped_model_speaks_every_digit_for_one_second_unclipped(gen):
    result = gen.sample(list(range(10)), seed=7)  # the default sampler, steps and guidance: what `c2d generate` does
    assert result.audio.shape[0] == 10
    for digit, wave in zip(result.digits, result.audio):
        assert wave_problems(wave, result.sample_rate) == [], f"digit {digit}"


@pytest.mark.parametrize("value,expected", [("7", 7), (7, 7), ("Seven", 7), ("zero", 0)])
def test_parse_digit(value, expected):
    assert parse_digit(value, LABELS) == expected


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"digits": "eleven"}, "unknown digit"),
        ({"digits": "12"}, "unknown digit"),
        ({"digits": "1", "steps": 0}, "steps"),
        ({"digits": "1", "guidance": -1.0}, "guidance"),
        ({"digits": "1", "sampler": "heun"}, "sampler"),
    ],
)
def test_bad_requests_are_clear_errors(gen, kwargs, message):
    with pytest.raises(GenerationError, match=message):
        gen.sample(**kwargs)


def test_nan_mid_sampling_stops_with_the_step_and_writes_no_wav(tmp_path, monkeypatch):
    from c2d.runtime.backends.ort import OrtBackend

    real_run, calls = OrtBackend.run, [0]

    def poisoned(self, feeds, outputs=None):
        out = real_run(self, feeds, outputs)
        calls[0] += 1
        if "eps" in (outputs or []) and calls[0] == 3:
            out[0][...] = np.nan
        return out

    monkeypatch.setattr(OrtBackend, "run", poisoned)
    res = CliRunner().invoke(main, ["generate", "--digit", "4", "--steps", "5", "--quiet", "--backend", "ort", "-o", str(tmp_path / "four.wav")])
    assert res.exit_code == 1 and "non-finite values at step 3" in res.output and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


def _copy_bundle(tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(SHIPPED, dst)
    return dst


def test_newer_bundle_format_and_missing_vocoder_are_clear_errors(tmp_path):
    bundle = _copy_bundle(tmp_path)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    (bundle / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match="newer"):
        load(bundle)
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    (bundle / "vocoder.onnx").unlink()
    res = CliRunner().invoke(main, ["generate", "--digit", "1", "--bundle", str(bundle), "-o", str(tmp_path / "one.wav")])
    assert res.exit_code == 1 and "vocoder.onnx is missing" in res.output
    assert not (tmp_path / "one.wav").exists()


def test_cli_writes_wavs_and_a_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    out = tmp_path / "digits.wav"
    res = CliRunner().invoke(
        main,
        [
            "generate",
            "--digit",
            "seven",
            "--digit",
            "3",
            "--sampler",
            "ancestral",
            "--steps",
            "6",
            "--quiet",
            "--plot",
            "--sample-rate",
            "16000",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "real-time factor" in res.output
    wavs = sorted(tmp_path.glob("digits-*.wav"))
    assert [w.name for w in wavs] == ["digits-seven-0.wav", "digits-three-1.wav"]
    data, rate = sf.read(wavs[0])
    assert rate == 16000 and len(data) == 16000 and np.abs(data).max() > 1e-3
    assert (tmp_path / "digits.png").stat().st_size > 1000


@pytest.mark.slow
def test_generation_runs_where_torch_cannot_be_imported(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from c2d.cli import main\n"
        f"main(['generate', '--digit', '7', '--sampler', 'ancestral', '--steps', '4', '--quiet', '-o', r'{tmp_path / 'seven.wav'}'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sf.info(str(tmp_path / "seven.wav")).frames == 22050


# --- backends -----------------------------------------------------------------------------------------------


def test_ort_backend_runs_the_shipped_graph_with_threads():
    backend = open_backend("ort", SHIPPED / "generator.onnx", BackendOptions(threads=1))
    assert backend.input_names == ("x", "t", "y", "gamma") and backend.output_names == ("eps", "logits", "guidance")
    feeds = {
        "x": np.zeros((2, 1, 80, 88), np.float32),
        "t": np.full(2, 0.5, np.float32),
        "y": np.eye(10, dtype=np.float32)[[1, 2]],
        "gamma": np.zeros(2, np.float32),
    }
    eps, logits = backend.run(feeds, ["eps", "logits"])
    assert eps.shape == (2, 1, 80, 88) and logits.shape == (2, 10)
    assert "c2d.variant" in backend.metadata()


def test_ort_gpu_providers_are_configured_and_refused_clearly_when_absent():
    chain = provider_list(BackendOptions(provider="tensorrt", fp16=True, cache_dir=Path("/c")))
    assert [p[0] if isinstance(p, tuple) else p for p in chain] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert chain[0][1]["trt_fp16_enable"] and chain[0][1]["trt_engine_cache_path"] == "/c"
    assert provider_list(BackendOptions(device="cuda"))[0][0] == "CUDAExecutionProvider"
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        check_available(provider_list(BackendOptions(device="cuda")), ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="provider"):
        provider_list(BackendOptions(provider="rocm"))


def test_tensorrt_profile_cache_key_and_buffers_from_bundle_metadata():
    io = onnx_io_shapes(SHIPPED / "generator.onnx")
    profile = make_profile(io, ("x", "t", "y", "gamma"), max_batch=8, opt_batch=2)
    assert profile.shapes["x"] == ((1, 1, 80, 88), (2, 1, 80, 88), (8, 1, 80, 88))
    assert profile.shapes["y"] == ((1, 10), (2, 10), (8, 10))
    vocoder_profile = make_profile({"mel": ["batch", 80, "frames"]}, ("mel",), 4)
    assert vocoder_profile.shapes["mel"][2] == (4, 80, 512)
    with pytest.raises(ValueError, match="bounds"):
        make_profile({"a": ["batch", "mystery"]}, ("a",), 2)
    key = engine_cache_key("sha", "H100", "9.0", "10.3", False, False, profile)
    assert key != engine_cache_key("sha", "H200", "9.0", "10.3", False, False, profile)
    assert key != engine_cache_key("sha", "H100", "9.0", "10.4", False, False, profile)
    assert key != engine_cache_key("sha", "H100", "9.0", "10.3", True, False, profile)
    assert key != engine_cache_key("sha", "H100", "9.0", "10.3", False, False, make_profile(io, ("x", "t", "y", "gamma"), 16))
    assert buffer_plan(profile.max_shapes(), {}) == {"x": 8 * 80 * 88 * 4, "t": 32, "y": 320, "gamma": 32}


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed (needs an NVIDIA GPU)")
def test_tensorrt_backend_matches_ort():  # pragma: no cover - runs only where TensorRT exists
    feeds = {
        "x": np.random.default_rng(0).standard_normal((2, 1, 80, 88), dtype=np.float32),
        "t": np.full(2, 0.5, np.float32),
        "y": np.eye(10, dtype=np.float32)[[1, 2]],
        "gamma": np.full(2, 3.0, np.float32),
    }
    ref = open_backend("ort", SHIPPED / "generator.onnx").run(feeds)
    ours = open_backend("trt", SHIPPED / "generator.onnx", BackendOptions(device="cuda", max_batch=4)).run(feeds)
    for a, b in zip(ours, ref):
        assert np.abs(a - b).max() / np.abs(b).max() < 1e-3


def test_trt_backend_without_tensorrt_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    res = CliRunner().invoke(main, ["generate", "--digit", "1", "--backend", "trt", "-o", str(tmp_path / "one.wav")])
    assert res.exit_code == 1 and "tensorrt" in res.output and not (tmp_path / "one.wav").exists()


def test_resample_keeps_the_pitch():
    t = np.arange(22050) / 22050
    out = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), 22050, 16000)
    assert out.shape == (16000,)
    assert abs(np.argmax(np.abs(np.fft.rfft(out))) - 440) <= 1  # 1 Hz bins over 1 s


def _counting(gen):
    calls = []
    return calls, (lambda n, t: calls.append(t))


def test_the_bundle_names_the_default_sampler_and_its_steps(gen):
    """No sampler options: what the bundle's metadata says (the shipped one: a few-step sampler, <= 25 evaluations)."""
    calls, on_step = _counting(gen)
    result = gen.sample("3", on_step=on_step, vocode=False)
    assert (result.sampler, result.steps) == (gen.meta.default_sampler, gen.meta.default_steps) == gen.sampler_and_steps()
    assert len(calls) == gen.meta.default_steps
    assert gen.meta.default_sampler != "em" and gen.meta.default_steps <= 25


def test_an_explicit_sampler_wins_and_takes_its_own_default_steps(gen):
    from c2d.runtime.samplers import SAMPLERS

    assert gen.sampler_and_steps("em") == ("em", SAMPLERS["em"].default_steps) == ("em", 100)
    assert gen.sampler_and_steps("em", 7) == ("em", 7)
    assert gen.sampler_and_steps(None, 9) == (gen.meta.default_sampler, 9)


def test_a_bundle_written_before_default_sampler_existed_runs_the_papers_em():
    from c2d.runtime.bundle import decode_metadata, encode_metadata

    meta = load(backend="ort").meta
    props = {k: v for k, v in encode_metadata(meta).items() if k not in ("c2d.default_sampler", "c2d.gaussian_skip")}
    old = decode_metadata(props)
    assert old.default_sampler == "em" and old.gaussian_skip is False


def test_ode_samplers_warn_on_an_eps_generator_only(gen, tmp_path):
    """The shipped generator (--precond eps) warns, from the API and the command line; one with a preconditioned
    output (metadata gaussian_skip true, as --precond edm exports) runs the probability-flow ODE silently."""
    import dataclasses
    import warnings

    assert not gen.meta.gaussian_skip
    with pytest.warns(UserWarning, match="probability-flow ODE"):
        gen.sample("3", steps=2, sampler="ddim", vocode=False)
    res = CliRunner().invoke(main, ["generate", "--digit", "3", "--sampler", "dpm2m", "--steps", "2", "--quiet", "-o", str(tmp_path / "a.wav")])
    assert res.exit_code == 0 and "warning: dpm2m: the probability-flow ODE" in res.output
    edm = load(backend="ort")
    edm.meta = dataclasses.replace(edm.meta, gaussian_skip=True, parameterisation="edm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edm.sample("3", steps=2, sampler="ddim", vocode=False)
    res = CliRunner().invoke(main, ["generate", "--help"])
    assert " ".join(res.output.split()).count("(warns on a generator trained with --precond eps)") == 2  # ddim, dpm2m


@pytest.mark.slow
def test_profile_and_calibration_run_the_bundles_default_sampler(gen, tmp_path):
    from c2d.calibration.record import record
    from c2d.runtime.profile import profile_bundle

    prof = profile_bundle(SHIPPED, steps=3, threads=1)
    assert prof["sampler"] == gen.meta.default_sampler and prof["steps"] == 3
    info = record(SHIPPED, tmp_path / "calib", digits=[1, 2], guidances=[3.0], steps=3, threads=1)
    assert info["sampler"] == gen.meta.default_sampler and info["calls"] == 3
