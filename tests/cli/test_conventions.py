"""One convention everywhere: digit names, one seed bound equal to the help's, --version, the audio format from the
extension, warnings in one form, and `c2d sample` -> `c2d vocode` on one log-Mel scale."""

import re
from importlib.metadata import version

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from c2d.cli import main
from c2d.runtime import limits

SEEDED = ["generate", "sample", "evaluate", "calibrate"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_version_names_the_installed_package():
    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"c2d {version('c2d')}"


@pytest.mark.parametrize("command", SEEDED)
def test_every_seed_option_has_the_one_bound_its_help_states(command, tmp_path):
    text = " ".join(invoke(command, "--help").output.split())
    assert f"--seed INTEGER RANGE Sample k uses seed + k; 0 to {limits.MAX_SEED_START}" in text, text
    assert re.findall(r"--seed INTEGER RANGE .*?\[default: 0; 0<=x<=(\d+)\]", text) == [str(limits.MAX_SEED_START)]
    assert invoke(command, "--seed", limits.MAX_SEED_START, "--help").exit_code == 0
    res = invoke(command, "--seed", limits.MAX_SEED_START + 1, *([tmp_path] if command == "calibrate" else []))
    assert res.exit_code == 2 and "'--seed'" in res.output and str(limits.MAX_SEED_START) in res.output


@pytest.mark.parametrize("kind", ["classifier", "subnet", "unet", "vocoder", "evaluator", "audio-evaluator"])
def test_training_seeds_have_the_same_bound(kind):
    text = " ".join(invoke("train", kind, "--help").output.split())
    assert f"[default: 0; 0<=x<={limits.MAX_SEED_START}]" in text
    res = invoke("train", kind, "--seed", limits.MAX_SEED_START + 1, "-o", "never.pt")
    assert res.exit_code == 2 and "'--seed'" in res.output


def test_the_python_api_takes_the_same_seed_bound():
    from c2d.runtime.generate import load

    gen = load()
    with pytest.raises(ValueError, match=str(limits.MAX_SEED_START)):
        gen.sample(7, seed=limits.MAX_SEED_START + 1, steps=1, vocode=False)


@pytest.mark.parametrize("command", ["generate", "sample"])
def test_digit_names_and_numbers_are_the_same_digits(command, tmp_path):
    res = invoke(command, "--digit", "Nine", "--digit", "eleven", "-o", tmp_path / "x.wav")
    assert res.exit_code == 2 and "'eleven' is not a digit" in res.output and not list(tmp_path.iterdir())


def test_sample_takes_a_digit_name(tmp_path):
    by_name, by_number = tmp_path / "a.npy", tmp_path / "b.npy"
    assert invoke("sample", "--digit", "three", "--steps", "2", "-o", by_name).exit_code == 0
    assert invoke("sample", "--digit", "3", "--steps", "2", "-o", by_number).exit_code == 0
    assert np.array_equal(np.load(by_name), np.load(by_number))


def test_sample_then_vocode_works_on_one_scale(tmp_path):
    """The tour: `c2d sample` writes natural-log Mels, `c2d vocode` reads them without a flag."""
    mels, wav = tmp_path / "samples.npy", tmp_path / "samples.wav"
    res = invoke("sample", "--digit", "7", "--count", "2", "--steps", "4", "-o", mels)
    assert res.exit_code == 0, res.output
    log_mel = np.load(mels)
    assert log_mel.shape == (2, 80, 88) and log_mel.min() >= np.log(1e-5) - 1e-4 and log_mel.min() < -1
    res = invoke("vocode", mels, "-o", wav)
    assert res.exit_code == 0, res.output
    for k in range(2):
        wave, rate = sf.read(tmp_path / f"samples-{k}.wav")
        assert rate == 22050 and np.abs(wave).max() > 0.5  # at the default peak level, not silence
    res = invoke("vocode", mels, "--normalised", "-o", tmp_path / "n.wav")
    assert res.exit_code == 1 and "outside [-1, 1]" in res.output and "need no flag" in res.output


def test_vocode_refuses_the_normalised_scale_without_the_flag(tmp_path):
    mels = tmp_path / "m.npy"
    np.save(mels, np.random.default_rng(0).uniform(-1, 0.2, (1, 80, 40)).astype(np.float32))
    res = invoke("vocode", mels, "-o", tmp_path / "v.wav")
    assert res.exit_code == 1 and "pass --normalised" in res.output and not (tmp_path / "v.wav").exists()
    assert invoke("vocode", mels, "--normalised", "-o", tmp_path / "v.wav").exit_code == 0


def test_the_extension_chooses_the_audio_format(tmp_path):
    res = invoke("generate", "--digit", "4", "--steps", "2", "--quiet", "-o", tmp_path / "four.flac")
    assert res.exit_code == 0, res.output
    assert sf.info(tmp_path / "four.flac").format == "FLAC"
    for name in ("four.mp3", "four"):
        res = invoke("generate", "--digit", "4", "--steps", "2", "-o", tmp_path / name)
        assert res.exit_code == 1 and "c2d writes .wav or .flac" in res.output and not (tmp_path / name).exists()


def test_warnings_have_one_form(tmp_path):
    res = CliRunner().invoke(main, ["generate", "--digit", "1", "--sampler", "ddim", "--steps", "2", "--quiet", "-o", str(tmp_path / "a.wav")])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("warning: ") for line in lines) and "WARNING" not in res.stderr
