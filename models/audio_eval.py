"""A second, independent judge that listens to the audio c2d writes: a 2-D ResNet over MFCCs at FSDD's own 8 kHz.

It shares nothing with the generator or the first evaluator (`models/evaluator.py`): not the front end (MFCC with
deltas from a 25 ms / 10 ms STFT at 8 kHz, not the 22,050 Hz HiFi-GAN log-Mel), not the kind of network (2-D
residual CNN with BatchNorm and ReLU, not a 1-D time-delay network and not a noise-conditioned U-Net encoder), and
not the input: it reads waveforms, so the vocoder, the peak normalisation and the 16-bit quantisation of the WAV file
are all in what it judges. Trained on the training split's recordings only, with waveform augmentation.

Every clip is first brought to what a listener gets from `c2d generate`: 1 s, centred, peak at -1 dBFS, 16-bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from c2d.models.config import register_config
from c2d.models.evaluator import fit_judge, judge_checkpoint, load_judge, posteriors_and_embeddings
from c2d.runtime.audio import fit_clip, hann_window, normalize_peak, resample

RATE = 8_000  # FSDD's recording rate: generated audio is judged in the band the data has


@register_config
@dataclass(frozen=True)
class MfccConfig:
    sample_rate: int = RATE
    seconds: float = 1.0
    n_fft: int = 256
    win_length: int = 200  # 25 ms
    hop_length: int = 80  # 10 ms
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 4000.0
    n_mfcc: int = 20
    floor_db: float = -80.0  # log-Mel power floor, relative to full scale (the clips peak at -1 dBFS)

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.seconds))

    @property
    def n_frames(self) -> int:
        return 1 + self.n_samples // self.hop_length


def as_written(wave: np.ndarray, rate: int, seconds: float = 1.0, out_rate: int = RATE) -> np.ndarray:
    """Waveforms [N, L] at `rate` -> [N, out_rate * seconds] at out_rate (default 8 kHz) as a listener gets them
    from `c2d generate`: centred in `seconds`, peak at -1 dBFS, rounded to 16 bits."""
    wave = np.atleast_2d(np.asarray(wave, np.float32))
    if not np.isfinite(wave).all():
        raise ValueError("audio to evaluate holds NaN or infinite samples")
    wave = resample(wave, rate, out_rate) if rate != out_rate else wave
    n = int(round(out_rate * seconds))
    clips = np.stack([fit_clip(w, n) for w in wave])
    clips = normalize_peak(clips, -1.0)
    return (np.round(np.clip(clips, -1.0, 1.0) * 32767.0) / 32767.0).astype(np.float32)


def _mel_filterbank(cfg: MfccConfig) -> np.ndarray:
    """HTK mel triangles [n_mels, n_fft // 2 + 1]."""

    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    edges_mel = np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II [n_out, n_in]."""
    k, n = np.arange(n_out)[:, None], np.arange(n_in)[None]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis


def _deltas(feat: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas along the last axis (edge-padded), the usual MFCC delta formula."""
    padded = np.pad(feat, [(0, 0)] * (feat.ndim - 1) + [(width, width)], mode="edge")
    n = feat.shape[-1]
    num = sum(k * (padded[..., width + k : width + k + n] - padded[..., width - k : width - k + n]) for k in range(1, width + 1))
    return num / (2 * sum(k * k for k in range(1, width + 1)))


def mfcc_features(clips: np.ndarray, cfg: MfccConfig = MfccConfig()) -> np.ndarray:
    """Clips [N, n_samples] at 8 kHz -> MFCC, delta, delta-delta [N, 3, n_mfcc, n_frames] (float32)."""
    clips = np.asarray(clips, np.float64)
    pad = cfg.n_fft // 2
    padded = np.pad(clips, [(0, 0), (pad, pad)])
    window = np.zeros(cfg.n_fft)
    start = (cfg.n_fft - cfg.win_length) // 2
    window[start : start + cfg.win_length] = hann_window(cfg.win_length)
    idx = np.arange(cfg.n_frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None]
    frames = padded[:, idx] * window  # [N, frames, n_fft]
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2 / (window**2).sum()  # [N, frames, bins]
    mel = power @ _mel_filterbank(cfg).T  # [N, frames, n_mels]
    log_mel = 10.0 * np.log10(np.maximum(mel, 10 ** (cfg.floor_db / 10)))
    mfcc = (log_mel @ _dct_matrix(cfg.n_mels, cfg.n_mfcc).T).transpose(0, 2, 1)  # [N, n_mfcc, frames]
    d1 = _deltas(mfcc)
    return np.stack([mfcc, d1, _deltas(d1)], axis=1).astype(np.float32)


def load_split_audio(split: str, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """FSDD's recordings of one split ("train" or "test"), as written: (clips [N, 8000], digits [N])."""
    from c2d.models.data import list_clips, read_resampled

    clips = [c for c in list_clips(data_dir) if c.split == split]
    waves = [as_written(read_resampled(c.path, RATE), RATE)[0] for c in clips]
    return np.stack(waves) if waves else np.zeros((0, MfccConfig().n_samples), np.float32), np.array([c.digit for c in clips])


# --- the network ------------------------------------------------------------------------------------------------


@register_config
@dataclass(frozen=True)
class AudioEvaluatorConfig:
    mfcc: MfccConfig = MfccConfig()
    widths: tuple[int, ...] = (24, 48, 96)  # residual stages; every stage after the first halves both axes
    embed_dim: int = 128  # penultimate (FID / KID) dimension
    n_classes: int = 10


class _Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class AudioEvaluator(nn.Module):
    """Standardised MFCC stack [B, 3, n_mfcc, frames] -> (logits [B, K], embedding [B, embed_dim])."""

    def __init__(self, cfg: AudioEvaluatorConfig = AudioEvaluatorConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        blocks, c = [], w[0]
        for i, width in enumerate(w):
            blocks += [_Residual(c, width, 1 if i == 0 else 2), _Residual(width, width, 1)]
            c = width
        self.blocks = nn.Sequential(*blocks)
        self.embed = nn.Sequential(nn.Linear(2 * c, cfg.embed_dim), nn.ReLU())
        self.head = nn.Linear(cfg.embed_dim, cfg.n_classes)
        # per-channel, per-coefficient standardisation of the input, measured on the training split
        self.register_buffer("feat_mean", torch.zeros(1, 3, cfg.mfcc.n_mfcc, 1))
        self.register_buffer("feat_std", torch.ones(1, 3, cfg.mfcc.n_mfcc, 1))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.blocks(self.stem((feats - self.feat_mean) / self.feat_std))  # [B, C, F', T']
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # [B, 2C]
        emb = self.embed(pooled)
        return self.head(emb), emb


# --- training ---------------------------------------------------------------------------------------------------


def augment_waves(clips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Training-time variation of 8 kHz clips [B, L]: speed x U(0.9, 1.1) (linear interpolation), a shift of up to
    +-100 ms, and, for half the clips, white noise at 25-50 dB SNR; then as a listener gets them (as_written)."""
    b, n = clips.shape
    out = np.empty_like(clips)
    for i, clip in enumerate(clips):
        speed = rng.uniform(0.9, 1.1)
        positions = np.arange(0, n, speed)
        warped = np.interp(positions, np.arange(n), clip)
        shifted = np.roll(fit_clip(warped.astype(np.float32), n), int(rng.integers(-800, 801)))
        if rng.random() < 0.5:
            snr_db = rng.uniform(25.0, 50.0)
            power = float(np.mean(shifted.astype(np.float64) ** 2)) + 1e-12
            shifted = shifted + rng.standard_normal(n).astype(np.float32) * math.sqrt(power / 10 ** (snr_db / 10))
        out[i] = shifted
    return as_written(out, RATE)


def train_audio_evaluator(
    clips: np.ndarray, labels: np.ndarray, steps: int = 2000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, bf16: bool = False, log=print
) -> AudioEvaluator:
    """clips [N, 8000] at 8 kHz (as_written), labels [N]. AdamW with cosine decay, label smoothing 0.05; bf16: autocast
    the network (about 2.5x faster where the CPU has AMX, slower elsewhere)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = AudioEvaluator()
    feats = mfcc_features(clips, model.cfg.mfcc)
    model.feat_mean.copy_(torch.from_numpy(feats.mean(axis=(0, 3), keepdims=True)[0][None]))
    model.feat_std.copy_(torch.from_numpy(feats.std(axis=(0, 3), keepdims=True)[0][None] + 1e-3))
    y_all = torch.from_numpy(np.asarray(labels, np.int64))

    def batch():
        idx = rng.integers(0, len(clips), batch_size)
        return torch.from_numpy(mfcc_features(augment_waves(clips[idx], rng), model.cfg.mfcc)), y_all[idx]

    return fit_judge(model, batch, steps, lr, log, bf16)


def classify_audio(model: AudioEvaluator, clips: np.ndarray, batch_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Clips [N, 8000] at 8 kHz (as_written) -> (posteriors [N, K], embeddings [N, D]) as float64."""
    return posteriors_and_embeddings(model, lambda i, j: torch.from_numpy(mfcc_features(clips[i:j], model.cfg.mfcc)), len(clips), batch_size)


def audio_evaluator_checkpoint(model: AudioEvaluator, test_accuracy: float, steps: int) -> dict:
    return judge_checkpoint("audio-evaluator", model, test_accuracy, steps)


def load_audio_evaluator(path) -> AudioEvaluator:
    return load_judge(path, "audio-evaluator", AudioEvaluator, AudioEvaluatorConfig)
