"""Log-Mel front end in numpy, matching the HiFi-GAN V1 universal vocoder's mel space (METHOD.md).

Torch-free so that the runtime, the evaluation code and the training data pipeline share one definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 22050  # Hz; the universal HiFi-GAN's rate
    n_fft: int = 1024  # FFT size and Hann window length
    hop_length: int = 256  # samples between frames
    n_mels: int = 80  # Slaney-scale, Slaney-normalised mel bands
    fmin: float = 0.0  # Hz
    fmax: float = 8000.0  # Hz
    clip_seconds: float = 1.0  # every clip is centred and padded/cropped to this length
    n_frames: int = 88  # 87 frames of a centred STFT of 1 s, padded to a multiple of 4 (two 2x downsamplings)
    log_floor: float = 1e-5  # log(max(mel, floor))
    norm_low: float = float(np.log(1e-5))  # log-Mel value mapped to -1 (the floor: silence)
    norm_high: float = 2.5  # log-Mel value mapped to +1; headroom above FSDD's maximum (1.31)

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_MEL = MelConfig()


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Slaney-normalised triangular filters, [n_mels, n_fft // 2 + 1] (librosa.filters.mel defaults)."""
    fft_freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    return weights.astype(np.float32)


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default)."""
    return np.hanning(n + 1)[:-1].astype(np.float32)


def stft(wave: np.ndarray, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Centred STFT (reflect padding, periodic Hann): [..., n_samples] -> complex [..., n_fft//2+1, frames]."""
    pad = cfg.n_fft // 2
    wave = np.asarray(wave, dtype=np.float32)
    padded = np.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(pad, pad)], mode="reflect")
    n_frames = 1 + (padded.shape[-1] - cfg.n_fft) // cfg.hop_length
    idx = np.arange(cfg.n_fft)[None, :] + cfg.hop_length * np.arange(n_frames)[:, None]  # [frames, n_fft]
    spec = np.fft.rfft(padded[..., idx] * hann_window(cfg.n_fft), axis=-1)  # [..., frames, bins]
    return np.swapaxes(spec, -1, -2)


def magnitude_spectrogram(wave: np.ndarray, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """HiFi-GAN's magnitude sqrt(|STFT|^2 + 1e-9): [n_samples] -> [n_fft//2+1, frames]."""
    spec = stft(wave, cfg)
    return np.sqrt(spec.real**2 + spec.imag**2 + 1e-9).astype(np.float32)


def log_mel(wave: np.ndarray, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Natural-log Mel spectrogram, log(max(mel, 1e-5)): [n_samples] -> [n_mels, frames]."""
    mel = mel_filterbank(cfg) @ magnitude_spectrogram(wave, cfg)
    return np.log(np.maximum(mel, cfg.log_floor)).astype(np.float32)


def normalize(logmel: np.ndarray, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Fixed affine map of log-Mel [norm_low, norm_high] -> [-1, 1], clipped."""
    scaled = 2.0 * (logmel - cfg.norm_low) / (cfg.norm_high - cfg.norm_low) - 1.0
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def denormalize(x: np.ndarray, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Inverse of `normalize` (values outside [-1, 1] are clipped first)."""
    x = np.clip(x, -1.0, 1.0)
    return ((x + 1.0) / 2.0 * (cfg.norm_high - cfg.norm_low) + cfg.norm_low).astype(np.float32)


def fit_clip(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Centre a waveform in a clip of n_samples: zero-pad both sides, or crop the middle."""
    wave = np.asarray(wave, dtype=np.float32)
    if len(wave) >= n_samples:
        start = (len(wave) - n_samples) // 2
        return wave[start : start + n_samples]
    left = (n_samples - len(wave)) // 2
    return np.pad(wave, (left, n_samples - len(wave) - left))


def pad_frames(x: np.ndarray, n_frames: int, value: float) -> np.ndarray:
    """Pad (or crop) the last axis to n_frames with a constant."""
    if x.shape[-1] >= n_frames:
        return x[..., :n_frames]
    widths = [(0, 0)] * (x.ndim - 1) + [(0, n_frames - x.shape[-1])]
    return np.pad(x, widths, constant_values=value)


def clip_features(wave_at_model_rate: np.ndarray, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Waveform at cfg.sample_rate -> normalised model input [n_mels, n_frames] in [-1, 1]."""
    clip = fit_clip(wave_at_model_rate, cfg.clip_samples)
    return pad_frames(normalize(log_mel(clip, cfg), cfg), cfg.n_frames, -1.0)


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling along the last axis by zero-padding/truncating the spectrum (scipy.signal.resample)."""
    if rate_in == rate_out:
        return wave
    n_in = wave.shape[-1]
    n_out = int(round(n_in * rate_out / rate_in))
    spec = np.fft.rfft(wave, axis=-1)
    bins = n_out // 2 + 1
    if bins <= spec.shape[-1]:
        spec = spec[..., :bins]
    else:
        spec = np.concatenate([spec, np.zeros(spec.shape[:-1] + (bins - spec.shape[-1],), spec.dtype)], axis=-1)
    return (np.fft.irfft(spec, n=n_out, axis=-1) * (n_out / n_in)).astype(np.float32)


SILENCE_DBFS = -45.0  # below this RMS a 1 s digit is inaudible on a laptop speaker
CLIPPED_LEVEL = 0.999  # |x| at or above this counts as a clipped sample
CLIPPED_FRACTION = 1e-3  # more clipped samples than this is audible distortion


def wave_problems(wave: np.ndarray, sample_rate: int, seconds: float = 1.0, tolerance: float = 0.05) -> list[str]:
    """What is wrong with one generated waveform [samples]: wrong length, silent, clipped; [] when none."""
    problems = []
    duration = wave.shape[-1] / sample_rate
    if abs(duration - seconds) > tolerance * seconds:
        problems.append(f"{duration:.3f} s long, expected {seconds:g} s")
    if not np.all(np.isfinite(wave)):
        return problems + ["non-finite samples"]
    rms_dbfs = 20 * np.log10(max(float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))), 1e-12))
    if rms_dbfs < SILENCE_DBFS:
        problems.append(f"silent: RMS {rms_dbfs:.1f} dBFS < {SILENCE_DBFS:g}")
    clipped = float(np.mean(np.abs(wave) >= CLIPPED_LEVEL))
    if clipped > CLIPPED_FRACTION:
        problems.append(f"clipped: {clipped:.2%} of samples at full scale")
    return problems


def normalize_peak(audio: np.ndarray, peak_dbfs: float = -1.0, max_gain_db: float = 40.0) -> np.ndarray:
    """Scale each waveform [B, samples] so its peak sits at peak_dbfs (no clipping, every digit equally loud).
    The gain is capped at max_gain_db so that a silent output is not blown up into noise."""
    peaks = np.max(np.abs(audio), axis=-1, keepdims=True).astype(np.float64)
    gain = np.minimum(10 ** (peak_dbfs / 20) / np.maximum(peaks, 1e-12), 10 ** (max_gain_db / 20))
    return (audio * gain).astype(np.float32)
