import numpy as np
import pytest
import soundfile as sf

from c2d.models.data import DEFAULT_DATA, DataError, list_clips, load_features, read_resampled


def test_missing_data_folder_names_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        list_clips(tmp_path / "nope")


def test_env_variable_points_to_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("C2D_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="elsewhere"):
        list_clips()


def test_empty_data_folder_is_a_clear_error(tmp_path):
    (tmp_path / "recordings").mkdir()
    with pytest.raises(DataError, match="no FSDD recordings"):
        list_clips(tmp_path)


def test_unreadable_wav_names_the_file(tmp_path):
    bad = tmp_path / "3_bob_7.wav"
    bad.write_bytes(b"this is not a wav file")
    with pytest.raises(DataError, match="3_bob_7.wav"):
        load_features("train", tmp_path, cache_dir=tmp_path / "cache")


def test_split_cache_and_resampling_on_synthetic_recordings(tmp_path):
    sr = 8000
    for digit, index in [(1, 0), (1, 7), (2, 3), (2, 30)]:
        tone = 0.3 * np.sin(2 * np.pi * 440 * (digit + 1) * np.arange(3000) / sr)
        sf.write(tmp_path / f"{digit}_ann_{index}.wav", tone.astype(np.float32), sr)
    assert len(read_resampled(tmp_path / "1_ann_0.wav", 22050)) == pytest.approx(3000 * 22050 / 8000, abs=1)
    train = load_features("train", tmp_path, cache_dir=tmp_path / "cache")
    test = load_features("test", tmp_path, cache_dir=tmp_path / "cache")
    assert sorted(train.y.tolist()) == [1, 2] and sorted(test.y.tolist()) == [1, 2]  # takes 0-4 are the test set
    assert train.x.shape == (2, 1, 80, 88) and train.x.min() >= -1 and train.x.max() <= 1
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # computed once, then read from the cache
    again = load_features("train", tmp_path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.x, train.x)


@pytest.mark.skipif(not DEFAULT_DATA.is_dir(), reason="FSDD not present next to the checkout")
def test_real_fsdd_files_give_spoken_digit_features(tmp_path):
    clips = list_clips()
    assert len(clips) == 3000 and sum(c.split == "test" for c in clips) == 300
    waves = [read_resampled(c.path, 22050) for c in clips[:3]]
    assert all(0.1 < len(w) / 22050 < 2.5 and np.abs(w).max() > 0.05 for w in waves)
