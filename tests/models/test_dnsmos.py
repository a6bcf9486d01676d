"""benchmarks/dnsmos.py: the speech-quality predictor the vocoder benchmark reports (speechmos' ONNX model)."""

import numpy as np
import pytest

pytest.importorskip("speechmos", reason="DNSMOS needs the speechmos package: pip install 'c2d[test]'")

from c2d.models.data import DEFAULT_DATA, list_clips, read_resampled  # noqa: E402
from c2d.models.dnsmos import DNSMOS  # noqa: E402
from c2d.runtime.audio import fit_clip  # noqa: E402

RATE = 22_050


@pytest.fixture(scope="module")
def dnsmos():
    return DNSMOS(threads=1)


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_DATA.is_dir(), reason="FSDD not present next to the checkout")
def test_real_speech_scores_above_the_same_speech_buried_in_noise_and_above_noise(dnsmos):
    rng = np.random.default_rng(0)
    clean = [read_resampled(c.path, RATE) for c in list_clips()[:4]]
    for wave in clean:
        noisy = np.clip(wave + 0.3 * np.abs(wave).max() * rng.standard_normal(wave.shape), -1, 1)
        speech, buried = dnsmos(wave, RATE), dnsmos(noisy, RATE)
        assert speech["ovrl"] > buried["ovrl"] + 0.3 and speech["bak"] > buried["bak"] + 0.5, (speech, buried)
    noise = dnsmos(0.1 * rng.standard_normal(RATE), RATE)
    assert noise["ovrl"] < 1.5
    clips = np.stack([fit_clip(w, RATE) for w in clean])  # 1 s each, as the vocoder benchmark scores them
    each = [dnsmos(c, RATE)["ovrl"] for c in clips]
    assert dnsmos.mean(clips, RATE)["ovrl"] == pytest.approx(np.mean(each)) and min(each) > 1.8


def test_bad_waveforms_are_refused(dnsmos):
    with pytest.raises(ValueError, match="finite"):
        dnsmos(np.full(RATE, np.nan), RATE)
    with pytest.raises(ValueError, match="non-empty"):
        dnsmos(np.zeros(0), RATE)
    with pytest.raises(ValueError, match="1-D"):
        dnsmos(np.zeros((2, RATE)), RATE)
