"""The weight-free Griffin-Lim vocoder (numpy): it inverts our own front end."""

import numpy as np
import pytest

from c2d.runtime.audio import DEFAULT_MEL, log_mel, stft
from c2d.runtime.vocoder import GriffinLim, istft, mel_to_magnitude


def _chirp(seconds: float = 22528 / 22050) -> np.ndarray:
    t = np.arange(int(seconds * 22050)) / 22050
    return (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t) + 0.2 * np.sin(2 * np.pi * 1200 * t * (1 + 0.2 * t))).astype(np.float32)


def test_istft_inverts_stft():
    wave = _chirp()
    back = istft(stft(wave, DEFAULT_MEL), DEFAULT_MEL, len(wave))
    assert np.abs(back - wave).max() < 1e-4


def test_mel_inversion_reproduces_the_mel():
    lm = log_mel(_chirp())[None]
    mag = mel_to_magnitude(lm, DEFAULT_MEL)
    assert (mag >= 0).all()
    from c2d.runtime.audio import mel_filterbank

    rebuilt = np.log(np.maximum(mel_filterbank(DEFAULT_MEL) @ mag[0], 1e-5))
    loud = lm[0] > -6
    assert np.abs(rebuilt - lm[0])[loud].mean() < 0.1


def test_griffin_lim_output_has_the_input_log_mel():
    wave = _chirp()
    lm = log_mel(wave)[:, :88]
    out = GriffinLim()(np.stack([lm, lm]))
    assert out.shape == (2, 88 * 256) and np.isfinite(out).all() and np.abs(out).max() <= 1.0
    np.testing.assert_array_equal(out[0], out[1])  # deterministic phase seed
    loud = lm > -6
    error = lambda w: np.abs(log_mel(w)[:, :88] - lm)[loud].mean()
    assert error(out[0]) < 0.45 < error(GriffinLim(n_iter=0)(lm[None])[0])  # the iterations recover a phase


def test_griffin_lim_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="80"):
        GriffinLim()(np.zeros((1, 64, 10), np.float32))


def test_griffin_lim_runs_blas_with_the_thread_count_it_is_given(monkeypatch):
    """One BLAS thread by default (OpenBLAS's spinning threads slowed it 2-50x on a loaded CPU); same output."""
    from threadpoolctl import threadpool_info

    import c2d.runtime.vocoder as vocoder

    seen = []

    def recording(*args):
        seen.append(max((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"), default=None))
        return mel_to_magnitude(*args)

    monkeypatch.setattr(vocoder, "mel_to_magnitude", recording)
    lm = log_mel(_chirp())[None, :, :88]
    limited, free = GriffinLim(n_iter=2)(lm), GriffinLim(n_iter=2, blas_threads=None)(lm)
    if seen[1] is None:
        pytest.skip("numpy exposes no BLAS library to threadpoolctl")
    assert seen[0] == 1 and seen[1] >= 1
    np.testing.assert_allclose(limited, free, atol=1e-5)
