"""Vocoders: log-Mel [B, n_mels, T] -> waveform [B, T * hop]. numpy only.

Griffin-Lim needs no weights: the fallback when a bundle has no HiFi-GAN. It inverts the mel filterbank by
non-negative least squares (projected gradient on the pseudo-inverse's start) and then recovers a phase with
fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99), as librosa.griffinlim does.

Its matrix products are small (80 x 513 by 513 x T), so BLAS threads do not help them, and on a loaded CPU
OpenBLAS's spinning threads made the vocoder 2-50x slower (benchmarks/vocoder_threads.py): it runs with
one BLAS thread unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from c2d.runtime.audio import DEFAULT_MEL, MelConfig, hann_window, mel_filterbank, stft
from c2d.runtime.errors import C2DError


class VocoderInputError(C2DError, ValueError):
    """A vocoder was given something that is not a finite log-Mel of its mel space."""


def check_log_mel(log_mel: np.ndarray, n_mels: int) -> np.ndarray:
    """log_mel as float32 [B, n_mels, T], T >= 1, all finite; VocoderInputError naming the problem otherwise."""
    log_mel = np.asarray(log_mel)
    if log_mel.ndim != 3 or log_mel.shape[1] != n_mels or log_mel.shape[0] < 1 or log_mel.shape[2] < 1:
        raise VocoderInputError(f"expected a log-Mel [B, {n_mels}, T] with B, T >= 1, got shape {log_mel.shape}")
    if not np.issubdtype(log_mel.dtype, np.floating):
        raise VocoderInputError(f"expected a floating-point log-Mel, got dtype {log_mel.dtype}")
    bad = ~np.isfinite(log_mel)
    if bad.any():
        item, band, frame = np.argwhere(bad)[0]
        raise VocoderInputError(
            f"the log-Mel has {int(bad.sum())} non-finite values (first: item {item}, band {band}, frame {frame}: {log_mel[item, band, frame]})"
        )
    return log_mel.astype(np.float32, copy=False)


def read_log_mels(path, mel: MelConfig, normalised: bool = False) -> np.ndarray:
    """Natural-log Mels [N, n_mels, T] from a .npy file holding [n_mels, T], [N, n_mels, T] or [N, 1, n_mels, T]:
    natural-log Mels (what `c2d sample` and the runtime write), or with `normalised` the model's [-1, 1] space.
    VocoderInputError naming the file when the array or its scale does not fit."""
    from c2d.runtime.audio import denormalize
    from c2d.runtime.limits import MAX_SAMPLES, MAX_VOCODE_FRAMES

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise VocoderInputError(f"cannot read {path} as a .npy array: {exc}") from exc
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2:
        array = array[None]
    if array.ndim == 3 and (array.shape[0] > MAX_SAMPLES or array.shape[-1] > MAX_VOCODE_FRAMES):
        raise VocoderInputError(
            f"{path}: {array.shape[0]} mels of {array.shape[-1]} frames; at most {MAX_SAMPLES} mels of {MAX_VOCODE_FRAMES} frames per run"
        )
    try:
        log_mel = check_log_mel(array, mel.n_mels)
    except VocoderInputError as exc:
        raise VocoderInputError(f"{path}: {exc}") from exc
    low, high = float(log_mel.min()), float(log_mel.max())
    if normalised:
        if max(abs(low), abs(high)) > 1.0 + 1e-3:
            raise VocoderInputError(
                f"{path}: --normalised, but the values are outside [-1, 1] ({low:.3g} to {high:.3g}); natural-log Mels "
                "(what `c2d sample` writes) need no flag"
            )
        return denormalize(log_mel, mel)
    if low >= -1.0 - 1e-3 and high <= 1.0 + 1e-3:
        # natural-log Mels of speech reach the floor log(1e-5) = -11.5 in silence; [-1, 1] throughout is the model's space
        raise VocoderInputError(
            f"{path}: every value lies in [-1, 1], the model's normalised space, not natural-log Mels "
            f"(which reach {mel.norm_low:.1f} in silence); pass --normalised if that is what it holds"
        )
    return log_mel


def istft(spec: np.ndarray, cfg: MelConfig, length: int) -> np.ndarray:
    """Inverse of runtime.audio.stft by windowed overlap-add: complex [..., bins, frames] -> [..., length]."""
    frames = np.fft.irfft(np.swapaxes(spec, -1, -2), n=cfg.n_fft, axis=-1).astype(np.float32)  # [..., frames, n_fft]
    window = hann_window(cfg.n_fft)
    n_frames = frames.shape[-2]
    total = cfg.n_fft + cfg.hop_length * (n_frames - 1)
    out = np.zeros(frames.shape[:-2] + (total,), dtype=np.float32)
    norm = np.zeros(total, dtype=np.float32)
    for i in range(n_frames):
        sl = slice(i * cfg.hop_length, i * cfg.hop_length + cfg.n_fft)
        out[..., sl] += frames[..., i, :] * window
        norm[sl] += window**2
    out /= np.maximum(norm, 1e-8)
    pad = cfg.n_fft // 2
    out = out[..., pad : pad + length]
    widths = [(0, 0)] * (out.ndim - 1) + [(0, length - out.shape[out.ndim - 1])]
    return np.pad(out, widths)


def mel_to_magnitude(log_mel: np.ndarray, cfg: MelConfig, iters: int = 200) -> np.ndarray:
    """Non-negative linear magnitude S with filterbank @ S ~ exp(log_mel): [..., n_mels, T] -> [..., bins, T]."""
    fb = mel_filterbank(cfg).astype(np.float64)  # [n_mels, bins]
    target = np.exp(log_mel.astype(np.float64))
    s = np.maximum(np.linalg.pinv(fb) @ target, 0.0)
    step = 1.0 / np.linalg.norm(fb, 2) ** 2
    for _ in range(iters):  # projected gradient descent on ||fb S - target||^2, S >= 0
        s = np.maximum(s - step * (fb.T @ (fb @ s - target)), 0.0)
    return s.astype(np.float32)


@dataclass(frozen=True)
class GriffinLim:
    """Weight-free vocoder. Deterministic: the phase starts from a seeded random draw."""

    mel: MelConfig = DEFAULT_MEL
    n_iter: int = 32
    momentum: float = 0.99
    seed: int = 0
    name: str = "griffin-lim"
    blas_threads: int | None = 1  # None: whatever BLAS uses by default

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    def __call__(self, log_mel: np.ndarray) -> np.ndarray:
        """[B, n_mels, T] natural-log Mel -> [B, T * hop] in [-1, 1]."""
        log_mel = check_log_mel(log_mel, self.mel.n_mels)
        if self.blas_threads is None:
            return self._vocode(log_mel)
        with threadpool_limits(limits=self.blas_threads, user_api="blas"):
            return self._vocode(log_mel)

    def _vocode(self, log_mel: np.ndarray) -> np.ndarray:
        magnitude = mel_to_magnitude(log_mel, self.mel)  # [B, bins, T]
        length = log_mel.shape[-1] * self.mel.hop_length
        rng = np.random.default_rng(self.seed)  # one phase draw shared by every item: independent of the batch
        angles = np.exp(2j * np.pi * rng.random(magnitude.shape[1:]))[None]
        previous = np.zeros_like(magnitude, dtype=np.complex128)
        for _ in range(self.n_iter):
            rebuilt = stft(istft(magnitude * angles, self.mel, length), self.mel)[..., : magnitude.shape[-1]]
            accelerated = rebuilt - (self.momentum / (1.0 + self.momentum)) * previous
            previous = rebuilt
            angles = accelerated / np.maximum(np.abs(accelerated), 1e-8)
        wave = istft(magnitude * angles, self.mel, length)
        return np.clip(wave, -1.0, 1.0).astype(np.float32)
