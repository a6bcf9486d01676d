import numpy as np
import pytest

from c2d.runtime import audio

CFG = audio.DEFAULT_MEL


def test_one_second_gives_87_frames_padded_to_88():
    wave = np.zeros(CFG.clip_samples, np.float32)
    assert audio.log_mel(wave).shape == (80, 87)
    feats = audio.clip_features(wave)
    assert feats.shape == (80, 88)
    assert np.all(feats == -1.0)  # silence is the floor, mapped to -1


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_sine_peaks_in_the_mel_band_of_its_frequency(freq):
    t = np.arange(CFG.clip_samples) / CFG.sample_rate
    mel = audio.log_mel(0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32))
    band = int(np.argmax(mel[:, 40]))
    centres = audio._mel_to_hz(np.linspace(audio._hz_to_mel(CFG.fmin), audio._hz_to_mel(CFG.fmax), CFG.n_mels + 2))[1:-1]
    assert abs(band - int(np.argmin(np.abs(centres - freq)))) <= 1


def test_slaney_filters_match_librosa_reference_values():
    fb = audio.mel_filterbank()
    assert fb.shape == (80, 513)
    # Slaney normalisation: each triangle has area 2 / (f_hi - f_lo) x width / 2 = 1 in Hz units
    hz_per_bin = CFG.sample_rate / CFG.n_fft
    np.testing.assert_allclose(fb.sum(axis=1) * hz_per_bin, 1.0, rtol=0.15)
    # mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above
    assert audio._hz_to_mel(1000.0) == pytest.approx(15.0)
    assert audio._hz_to_mel(6400.0) == pytest.approx(15.0 + 27.0)
    np.testing.assert_allclose(audio._mel_to_hz(audio._hz_to_mel(np.array([50.0, 999.0, 4321.0]))), [50.0, 999.0, 4321.0])


def test_normalisation_round_trip_and_clipping():
    logmel = np.array([CFG.norm_low, 0.0, CFG.norm_high, CFG.norm_high + 5], np.float32)
    x = audio.normalize(logmel)
    assert x[0] == -1.0 and x[2] == 1.0 and x[3] == 1.0
    np.testing.assert_allclose(audio.denormalize(x)[:3], logmel[:3], atol=1e-5)


def test_fit_clip_centres_short_and_crops_long():
    short = audio.fit_clip(np.ones(10, np.float32), 20)
    assert short.shape == (20,) and short[:5].sum() == 0 and short[5:15].sum() == 10
    long = audio.fit_clip(np.arange(30, dtype=np.float32), 20)
    assert long[0] == 5 and len(long) == 20
