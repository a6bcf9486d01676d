"""Distilling HiFi-GAN V1 universal into the Fourier vocoder (models/vocoder.py).

The teacher maps a log-Mel to one waveform deterministically, so the student regresses the teacher's output:
multi-resolution STFT distance (spectral convergence + log-magnitude L1), the log-Mel L1 of the front end, and a
power-law-compressed complex STFT loss at the vocoder's own framing, which is what teaches the phase.

Training mels: the FSDD training split (never the test split) plus mels sampled from a generator bundle with several
samplers (generated mels are smoother than real ones, and the vocoder must handle what the product feeds it).
The pairs (mel, teacher waveform) are computed once and cached as .npz in the feature cache folder.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from c2d.models.checkpoint import new_checkpoint
from c2d.models.data import Features, default_cache_dir, load_features
from c2d.models.train import Job
from c2d.models.vocoder import FourierVocoder, VocoderConfig, hann
from c2d.runtime.audio import DEFAULT_MEL, MelConfig, denormalize, mel_filterbank
from c2d.runtime.files import atomic_path
from c2d.runtime.sde import SDEConfig

# (sampler, steps, share of the generated mels): the default sampler most, plus a multistep SDE and an ODE
# sampler, whose smoother mels users get when they ask for them.
GENERATED_MIX = (("ancestral", 8, 0.6), ("dpm3m-sde", 25, 0.2), ("ddim", 25, 0.2))
GENERATED_SEED = 5_000_000  # far from every evaluation seed (benchmarks use 0-20,000)
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop) of the multi-resolution STFT loss
COMPRESSION = 0.3  # |S|^c of the complex loss: quiet bins count, loud ones do not dominate


@dataclass(frozen=True)
class DistillSet:
    """log-Mel inputs [N, n_mels, T] with the teacher's waveforms [N, T * hop]; `source` is 'real' or the sampler."""

    mels: np.ndarray
    waves: np.ndarray
    source: np.ndarray

    def as_features(self) -> Features:
        """The layout train() reads: x = inputs, y = targets."""
        return Features(self.mels, self.waves, self.source)


def real_training_mels(data_dir=None, features_file=None, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Natural-log Mels [N, n_mels, T] of FSDD's training split, as the generator's output space holds them."""
    features = load_features("train", data_dir, features_file=features_file, cfg=cfg)
    return denormalize(features.x[:, 0], cfg)


def generated_mels(bundle, count: int, log: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray]:
    """count log-Mels [count, n_mels, T] from the bundle's generator, digits cycled, samplers per GENERATED_MIX."""
    from c2d.runtime.generate import Generator

    gen = Generator(bundle)
    mels, sources, seed = [], [], GENERATED_SEED
    for sampler, steps, share in GENERATED_MIX:
        n = int(round(count * share))
        if n == 0:
            continue
        digits = [k % len(gen.meta.labels) for k in range(n)]
        start = time.time()
        with warnings.catch_warnings():  # ddim's run-time warning: these mels are wanted
            warnings.simplefilter("ignore")
            result = gen.sample(digits, seed=seed, sampler=sampler, steps=steps, batch_size=16, vocode=False)
        log(f"generated {n} mels with {sampler}-{steps} in {time.time() - start:.0f} s")
        mels.append(result.log_mel)
        sources += [sampler] * n
        seed += n
    return np.concatenate(mels).astype(np.float32), np.array(sources)


@torch.no_grad()
def teacher_waves(mels: np.ndarray, batch: int = 16, log: Callable[[str], None] = print) -> np.ndarray:
    """HiFi-GAN V1 universal on [N, n_mels, T] -> [N, T * hop] float32."""
    from c2d.export.hifigan import load_hifigan

    teacher, _ = load_hifigan()
    out, start = [], time.time()
    for i in range(0, len(mels), batch):
        out.append(teacher(torch.from_numpy(mels[i : i + batch]))[:, 0].numpy())
        if (i // batch) % 20 == 0:
            log(f"teacher: {i + len(out[-1])}/{len(mels)} clips, {time.time() - start:.0f} s")
    return np.concatenate(out).astype(np.float32)


def distillation_set(bundle, generated: int, data_dir=None, features_file=None, cache_dir=None,
                     log: Callable[[str], None] = print) -> DistillSet:
    """Real training mels + `generated` sampled ones, with the teacher's waveforms; cached by content."""
    from c2d.runtime.bundle import file_sha256, read_manifest

    real = real_training_mels(data_dir, features_file)
    key = hashlib.sha256(real.tobytes())
    if generated:
        manifest = read_manifest(bundle)
        key.update(file_sha256(Path(bundle) / manifest["generator"]["file"]).encode())
    key.update(json.dumps([generated, GENERATED_MIX, GENERATED_SEED]).encode())
    path = Path(cache_dir or default_cache_dir()) / f"vocoder-distill-{key.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as data:
            log(f"distillation set from the cache: {path}")
            return DistillSet(data["mels"], data["waves"], data["source"])
    mels, sources = real, np.array(["real"] * len(real))
    if generated:
        gen_mels, gen_sources = generated_mels(bundle, generated, log)
        mels, sources = np.concatenate([real, gen_mels]), np.concatenate([sources, gen_sources])
    waves = teacher_waves(mels, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, mels=mels, waves=waves.astype(np.float16), source=sources)
    log(f"cached the distillation set ({len(mels)} clips) in {path}")
    return DistillSet(mels, waves.astype(np.float16), sources)


def _stft(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Centred STFT, periodic Hann, reflect padding (runtime.audio.stft): [B, L] -> complex [B, bins, frames]."""
    return torch.stft(wave, n_fft, hop, window=hann(n_fft).to(wave), center=True, pad_mode="reflect", return_complex=True)


def _log_mel(magnitude: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    fb = torch.from_numpy(mel_filterbank(cfg)).to(magnitude)
    return torch.log(torch.clamp(fb @ magnitude, min=cfg.log_floor))


def distillation_loss(cfg: MelConfig = DEFAULT_MEL, complex_weight: float = 1.0, mel_weight: float = 1.0) -> Callable:
    """loss(model, log_mel [B, n_mels, T], teacher wave [B, T * hop], gen) -> scalar; train()'s LossFn."""

    def loss(model, log_mel, target, gen):
        target = target.float()
        pred = model(log_mel)
        total = 0.0
        for n_fft, hop in STFT_RESOLUTIONS:
            p, t = _stft(pred, n_fft, hop).abs() + 1e-7, _stft(target, n_fft, hop).abs() + 1e-7
            convergence = torch.linalg.norm(t - p, dim=(1, 2)) / torch.linalg.norm(t, dim=(1, 2)).clamp_min(1e-5)
            total = total + convergence.mean() + F.l1_loss(torch.log(p), torch.log(t))
        total = total / len(STFT_RESOLUTIONS)
        p_spec, t_spec = _stft(pred, cfg.n_fft, cfg.hop_length), _stft(target, cfg.n_fft, cfg.hop_length)
        total = total + mel_weight * F.l1_loss(_log_mel(p_spec.abs(), cfg), _log_mel(t_spec.abs(), cfg))
        compress = lambda s: s * (s.abs() + 1e-7) ** (COMPRESSION - 1)  # same phase, magnitude^c
        return total + complex_weight * (compress(p_spec) - compress(t_spec)).abs().pow(2).mean() * 10.0

    return loss


def make_vocoder_job(cfg: VocoderConfig = VocoderConfig(), mel: MelConfig = DEFAULT_MEL, seed: int = 0, teacher: str = "hifigan-v1-universal",
                     data: dict | None = None) -> Job:
    torch.manual_seed(seed)
    model = FourierVocoder(cfg)
    header = new_checkpoint("vocoder", "small", cfg, SDEConfig(), mel)
    header["teacher"] = teacher
    header["data"] = data or {}
    return Job(model, model, distillation_loss(mel), header)
