"""runtime.outputs: the files `c2d generate` writes, from Python, all or none, in the extension's format."""

import numpy as np
import pytest
import soundfile as sf

from c2d.runtime.files import OutputError
from c2d.runtime.generate import load
from c2d.runtime.outputs import write_audio_files, write_generation


@pytest.fixture(scope="module")
def gen():
    return load(backend="ort")


def test_write_generation_writes_one_file_per_sample_at_the_default_level(gen, tmp_path):
    run = write_generation(gen, ["one", 2], tmp_path / "d.flac", count=2, steps=2, plot=True)
    assert [p.name for p in run.paths] == ["d-one-0.flac", "d-one-1.flac", "d-two-2.flac", "d-two-3.flac"]
    for path in run.paths:
        wave, rate = sf.read(path)
        assert sf.info(path).format == "FLAC" and rate == gen.sample_rate
        assert np.abs(wave).max() == pytest.approx(10 ** (-1 / 20), abs=2e-3)  # -1 dBFS, as `c2d generate`
    assert run.png == tmp_path / "d.png" and run.png.stat().st_size > 0
    assert run.steps == 2 and run.sampling_seconds > 0


def test_write_generation_refuses_an_unknown_format_before_any_work(gen, tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "sample_batches", lambda *a, **k: pytest.fail("sampled before the output was checked"))
    with pytest.raises(OutputError, match=r"c2d writes \.wav or \.flac, got '\.ogg'"):
        write_generation(gen, [3], tmp_path / "three.ogg")
    assert list(tmp_path.iterdir()) == []


def test_write_audio_files_is_all_or_nothing(tmp_path):
    keep = tmp_path / "a-0.wav"
    keep.write_bytes(b"earlier")
    (tmp_path / "a-1.wav").mkdir()  # cannot be written
    with pytest.raises(OutputError):
        write_audio_files([keep, tmp_path / "a-1.wav"], np.zeros((2, 100), np.float32), 22050)
    assert keep.read_bytes() == b"earlier"
