"""Training the Fourier vocoder (models/vocoder.py) from HiFi-GAN V1 universal and FSDD's recordings.

The teacher maps a log-Mel to one waveform deterministically, so the student regresses a target directly:
multi-resolution STFT distance (spectral convergence + log-magnitude L1), the log-Mel L1 of the front end, and a
power-law-compressed complex STFT loss at the vocoder's own framing, which is what teaches the phase. TARGETS:
"teacher" takes everything from HiFi-GAN; "recordings" (default) takes the magnitudes from the recording where a
mel has one and the phase from HiFi-GAN (distillation_loss says why).

Training mels: the FSDD training split (never the test split) plus mels sampled from a generator bundle with several
samplers (generated mels are smoother than real ones, and the vocoder must handle what the product feeds it).
The pairs (mel, teacher waveform) are computed once and cached as .npz in the feature cache folder.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


TARGETS = ("recordings", "teacher")  # the first is the default (docs/vocoder.md)


@dataclass(frozen=True)
class DistillSet:
    """log-Mel inputs [N, n_mels, T], the teacher's waveforms [N, T * hop] and, for FSDD clips, the recordings
    themselves [N, T * hop] (zeros for generated mels); `source` is 'real' or the sampler."""

    mels: np.ndarray
    waves: np.ndarray
    source: np.ndarray
    originals: np.ndarray | None = None

    def as_features(self, targets: str = TARGETS[0]) -> Features:
        """The layout train() reads: x = inputs, y = targets ([N, L] teacher, or [N, 2, L] teacher and recording)."""
        if targets == "teacher":
            return Features(self.mels, self.waves, self.source)
        if self.originals is None:
            raise ValueError(
                "--targets recordings needs FSDD's recordings (--data); a --features file holds no recordings (use --targets teacher with it)"
            )
        return Features(self.mels, np.stack([self.waves, self.originals], axis=1), self.source)


def real_training_mels(data_dir=None, features_file=None, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Natural-log Mels [N, n_mels, T] of FSDD's training split, as the generator's output space holds them."""
    features = load_features("train", data_dir, features_file=features_file, cfg=cfg)
    return denormalize(features.x[:, 0], cfg)


def real_training_waves(data_dir=None, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """FSDD's training recordings [N, n_frames * hop] as the front end saw them (centred 1 s clip, zero-padded to
    the padded frame count), in load_features' order."""
    from c2d.models.data import list_clips, read_resampled
    from c2d.runtime.audio import fit_clip

    length = cfg.n_frames * cfg.hop_length
    clips = [c for c in list_clips(data_dir) if c.split == "train"]
    return np.stack(
        [np.pad(fit_clip(read_resampled(c.path, cfg.sample_rate), cfg.clip_samples), (0, length - cfg.clip_samples)) for c in clips]
    ).astype(np.float16)


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


def teacher_waves(mels: np.ndarray, export_teacher: Callable[[Path], object], batch: int = 8, log: Callable[[str], None] = print) -> np.ndarray:
    """HiFi-GAN V1 universal on [N, n_mels, T] -> [N, T * hop] float32, run as the ONNX graph that
    `export_teacher(path)` writes (the export layer's validated export; models never imports export). On ONNX Runtime
    it is about 3x faster than the PyTorch module on a CPU (same waveform within the export's 1e-4)."""
    import tempfile

    from c2d.runtime.backends import BackendOptions, open_backend

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hifigan.onnx"
        export_teacher(path)
        teacher = open_backend("ort", path, BackendOptions(threads=torch.get_num_threads()))
        out, start = [], time.time()
        for i in range(0, len(mels), batch):
            out.append(teacher.run({"mel": mels[i : i + batch]}, ["wave"])[0][:, 0])
            if (i // batch) % 50 == 0:
                log(f"teacher: {i + len(out[-1])}/{len(mels)} clips, {time.time() - start:.0f} s")
    return np.concatenate(out).astype(np.float32)


def distillation_set(
    bundle,
    generated: int,
    export_teacher: Callable[[Path], object],
    data_dir=None,
    features_file=None,
    cache_dir=None,
    log: Callable[[str], None] = print,
) -> DistillSet:
    """Real training mels + `generated` sampled ones, with the teacher's waveforms (see teacher_waves); cached by
    content, so the teacher is exported only when the cache misses."""
    from c2d.runtime.bundle import file_sha256, read_manifest

    real = real_training_mels(data_dir, features_file)
    key = hashlib.sha256(real.tobytes())
    if generated:
        key.update(file_sha256(Path(bundle) / str(read_manifest(bundle).generator.file)).encode())
    key.update(json.dumps([generated, GENERATED_MIX, GENERATED_SEED]).encode())
    path = Path(cache_dir or default_cache_dir()) / f"vocoder-distill-{key.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as data:
            log(f"distillation set from the cache: {path}")
            pairs = DistillSet(data["mels"], data["waves"], data["source"])
        return _with_originals(pairs, real, data_dir, features_file, path)
    mels, sources = real, np.array(["real"] * len(real))
    if generated:
        gen_mels, gen_sources = _cached(path.with_name(path.stem + "-generated.npz"), lambda: generated_mels(bundle, generated, log))
        mels, sources = np.concatenate([real, gen_mels]), np.concatenate([sources, gen_sources])
    waves = teacher_waves(mels, export_teacher, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, mels=mels, waves=waves.astype(np.float16), source=sources)
    log(f"cached the distillation set ({len(mels)} clips) in {path}")
    return _with_originals(DistillSet(mels, waves.astype(np.float16), sources), real, data_dir, features_file, path)


def _with_originals(pairs: DistillSet, real: np.ndarray, data_dir, features_file, path: Path) -> DistillSet:
    """pairs with the recordings of its real clips (None when only a features file is at hand), cached beside it."""
    if features_file is not None:
        return pairs
    cache = path.with_name(path.stem + "-recordings.npy")
    if cache.is_file():
        waves = np.load(cache)
    else:
        waves = real_training_waves(data_dir)
        with atomic_path(cache, ".npy") as tmp:
            np.save(tmp, waves)
    if len(waves) != len(real):
        raise ValueError(f"{len(waves)} training recordings for {len(real)} training mels; clear {cache.parent}")
    originals = np.zeros_like(pairs.waves)
    originals[: len(waves)] = waves
    return DistillSet(pairs.mels, pairs.waves, pairs.source, originals)


def _cached(path: Path, make: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(mels, sources) from the .npz at path, else from make(), then kept there: an interrupted build resumes."""
    if path.is_file():
        with np.load(path) as data:
            return data["mels"], data["source"]
    mels, sources = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, mels=mels, source=sources)
    return mels, sources


def _stft(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Centred STFT, periodic Hann, reflect padding (runtime.audio.stft): [B, L] -> complex [B, bins, frames]."""
    return torch.stft(wave, n_fft, hop, window=hann(n_fft).to(wave), center=True, pad_mode="reflect", return_complex=True)


def _log_mel(magnitude: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    fb = torch.from_numpy(mel_filterbank(cfg)).to(magnitude)
    return torch.log(torch.clamp(fb @ magnitude, min=cfg.log_floor))


def distillation_loss(cfg: MelConfig = DEFAULT_MEL, complex_weight: float = 10.0, mel_weight: float = 1.0) -> Callable:
    """loss(model, log_mel [B, n_mels, T], target, gen) -> scalar; train()'s LossFn.

    target [B, L]: the teacher's waveform, which every term compares with ("teacher" targets).
    target [B, 2, L]: the teacher's waveform and the recording (zeros for a generated mel) ("recordings" targets):
    the magnitudes come from the recording where there is one (HiFi-GAN universal renders FSDD's band-limited speech
    with log-Mel errors 4x Griffin-Lim's, docs/vocoder.md), the phase always from the teacher, and the log-Mel of
    the output is compared with the input mel itself."""

    def loss(model, log_mel, target, gen):
        target = target.float()
        if target.dim() == 3:
            teacher, recording = target[:, 0], target[:, 1]
            has_recording = recording.abs().amax(dim=-1, keepdim=True) > 0
            reference, mel_target = torch.where(has_recording, recording, teacher), log_mel
        else:
            teacher = reference = target
            mel_target = None
        pred = model(log_mel)
        total = 0.0
        for n_fft, hop in STFT_RESOLUTIONS:
            p, t = _stft(pred, n_fft, hop).abs() + 1e-7, _stft(reference, n_fft, hop).abs() + 1e-7
            convergence = torch.linalg.norm(t - p, dim=(1, 2)) / torch.linalg.norm(t, dim=(1, 2)).clamp_min(1e-5)
            total = total + convergence.mean() + F.l1_loss(torch.log(p), torch.log(t))
        total = total / len(STFT_RESOLUTIONS)
        p_spec, r_spec = _stft(pred, cfg.n_fft, cfg.hop_length), _stft(reference, cfg.n_fft, cfg.hop_length)
        p_mel = _log_mel(p_spec.abs(), cfg)  # [B, n_mels, T + 1]: a centred STFT of T * hop samples
        if mel_target is None:
            total = total + mel_weight * F.l1_loss(p_mel, _log_mel(r_spec.abs(), cfg))
        else:
            total = total + mel_weight * F.l1_loss(p_mel[..., : mel_target.shape[-1]], mel_target)
        t_spec = r_spec if reference is teacher else _stft(teacher, cfg.n_fft, cfg.hop_length)
        target_spec = r_spec.abs() ** COMPRESSION * t_spec / (t_spec.abs() + 1e-7)  # reference magnitude^c, teacher phase
        compressed = p_spec * (p_spec.abs() + 1e-7) ** (COMPRESSION - 1)
        return total + complex_weight * (compressed - target_spec).abs().pow(2).mean()

    return loss


def make_vocoder_job(
    cfg: VocoderConfig = VocoderConfig(),
    mel: MelConfig = DEFAULT_MEL,
    seed: int = 0,
    teacher: str = "hifigan-v1-universal",
    data: dict | None = None,
    targets: str = TARGETS[0],
) -> Job:
    if targets not in TARGETS:
        raise ValueError(f"unknown vocoder targets {targets!r}; choose one of {TARGETS}")
    torch.manual_seed(seed)
    model = FourierVocoder(cfg)
    header = new_checkpoint("vocoder", "small", cfg, SDEConfig(), mel)
    header["teacher"] = teacher
    header["targets"] = targets
    header["data"] = data or {}
    return Job(model, model, distillation_loss(mel), header)
