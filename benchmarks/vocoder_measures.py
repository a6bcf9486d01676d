"""What the vocoder benchmarks measure with: PESQ, STOI, multi-resolution STFT distance, DNSMOS rows, the test set,
and the vocoders as ONNX graphs (vocoders.py, vocoder_phase.py and vocoder_precision.py share them)."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path

import numpy as np

from c2d.models.dnsmos import DNSMOS
from c2d.runtime.audio import DEFAULT_MEL, clip_features, denormalize, fit_clip, log_mel, resample, stft
from c2d.runtime.backends import BackendOptions, open_backend
from c2d.runtime.bundle import decode_metadata, read_manifest
from c2d.runtime.generate import OnnxVocoder

RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
METRIC_RATE = 16_000  # PESQ wide band needs 16 kHz
GEN_SEED = 20_000
STOI_GROUP = 10  # consecutive test clips joined for one STOI value
CLIP = DEFAULT_MEL.clip_samples


def mr_stft_distance(out: np.ndarray, ref: np.ndarray) -> float:
    """Mean over resolutions of spectral convergence + mean |log |S_out| - log |S_ref||."""
    total = 0.0
    for n_fft, hop in RESOLUTIONS:
        cfg = dataclasses.replace(DEFAULT_MEL, n_fft=n_fft, hop_length=hop)
        a, b = np.abs(stft(out, cfg)) + 1e-5, np.abs(stft(ref, cfg)) + 1e-5
        total += np.linalg.norm(b - a) / max(np.linalg.norm(b), 1e-8) + np.mean(np.abs(np.log(a) - np.log(b)))
    return float(total / len(RESOLUTIONS))


def pesq_wb(out: np.ndarray, ref: np.ndarray) -> float:
    """PESQ wide band of one clip at 16 kHz; NaN where PESQ finds no utterance."""
    from pesq import pesq

    try:
        return float(pesq(METRIC_RATE, to_metric_rate(ref), to_metric_rate(out), "wb"))
    except Exception:  # pesq raises its own NoUtterancesError / BufferTooShortError
        return float("nan")


def stoi_of_group(outs: np.ndarray, refs: np.ndarray) -> float:
    """STOI of clips [n, CLIP] joined end to end at 16 kHz. A 1 s digit alone has fewer than the 30 speech frames
    (384 ms) that STOI's intermediate measure needs once silence is removed, so pystoi returns 1e-5 for many."""
    from pystoi import stoi

    return float(stoi(to_metric_rate(refs.reshape(-1)), to_metric_rate(outs.reshape(-1)), METRIC_RATE, extended=False))


def to_metric_rate(wave: np.ndarray) -> np.ndarray:
    return resample(wave, DEFAULT_MEL.sample_rate, METRIC_RATE).astype(np.float64)


def vocode_clips(vocoder, mels: np.ndarray, batch: int = 8) -> np.ndarray:
    """[N, n_mels, T] -> 1 s clips [N, CLIP], in batches."""
    return np.concatenate([vocoder(mels[i : i + batch]) for i in range(0, len(mels), batch)])[:, :CLIP]


def mean_and_sem(rows: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {k: {"mean": float(np.nanmean(v)), "sem": float(np.nanstd(v) / math.sqrt(np.sum(np.isfinite(v))))} for k, v in rows.items()}


def dnsmos_rows(waves: np.ndarray, dnsmos: DNSMOS) -> dict[str, list[float]]:
    scores = [dnsmos(w, DEFAULT_MEL.sample_rate) for w in waves]
    return {f"dnsmos_{k}": [s[k] for s in scores] for k in ("sig", "ovrl")}


def copy_synthesis(vocoder, mels: np.ndarray, originals: np.ndarray, dnsmos: DNSMOS) -> dict:
    """Metrics of vocoder(mels) against the original recordings [N, CLIP], and their DNSMOS."""
    waves = vocode_clips(vocoder, mels)
    rows = {"log_mel_l1": [], "mr_stft": [], "pesq": [], "stoi": []}
    for out, ref in zip(waves, originals):
        rows["log_mel_l1"].append(float(np.mean(np.abs(log_mel(out) - log_mel(ref)))))
        rows["mr_stft"].append(mr_stft_distance(out, ref))
        rows["pesq"].append(pesq_wb(out, ref))
    for i in range(0, len(waves), STOI_GROUP):
        rows["stoi"].append(stoi_of_group(waves[i : i + STOI_GROUP], originals[i : i + STOI_GROUP]))
    return mean_and_sem(rows | dnsmos_rows(waves, dnsmos))


def generated_audio(vocoder, log_mels: np.ndarray, digits: np.ndarray, evaluator, dnsmos: DNSMOS) -> dict:
    """The evaluator's accuracy on vocoded, re-analysed audio and its DNSMOS (vocoder None: the mels themselves)."""
    from c2d.models.evaluator import classify
    from c2d.runtime.audio import normalize

    quality = {}
    if vocoder is None:
        x = normalize(log_mels, DEFAULT_MEL)[:, None]
    else:
        waves = vocode_clips(vocoder, log_mels)
        x = np.stack([clip_features(w) for w in waves])[:, None]  # [N, 1, n_mels, n_frames]
        quality = mean_and_sem(dnsmos_rows(waves, dnsmos))
    correct = classify(evaluator, x)[0].argmax(1) == digits
    p = float(correct.mean())
    return {"accuracy": p, "sem": math.sqrt(p * (1 - p) / len(digits)), "n": int(len(digits)), **quality}


def interleaved_speed(vocoders: dict, mels: np.ndarray, batch: int, rounds: int, calls: int) -> dict[str, float]:
    """Median over rounds of ms per second of audio; every round runs every vocoder in turn, each after one untimed
    call. Caveat: at batch 1 a small ONNX vocoder timed right after another ONNX Runtime session measures up to 2x
    slower than the same graph timed after Griffin-Lim (3.7 against 6.6-7.9 ms per audio s for identical Fourier
    graphs in one run, with this warm-up; 4.0 against 8.5-8.9 without it). The previous session's spinning worker
    threads are the likely cause (not verified); compare extras with each other, not with the first Fourier column."""
    feed = mels[:batch]
    audio_s = batch * feed.shape[-1] * DEFAULT_MEL.hop_length / DEFAULT_MEL.sample_rate
    times = {name: [] for name in vocoders}
    for _ in range(rounds):
        for name, v in vocoders.items():
            v(feed)  # warm-up, untimed
            start = time.perf_counter()
            for _ in range(calls):
                v(feed)
            times[name].append((time.perf_counter() - start) / calls / audio_s * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def onnx_vocoder(path: Path, threads: int) -> OnnxVocoder:
    backend = open_backend("ort", path, BackendOptions(threads=threads))
    return OnnxVocoder(backend, decode_metadata(backend.metadata(), str(path)))


def fourier_onnx(source: Path, work: Path) -> Path:
    """The Fourier vocoder's ONNX file from a bundle folder, an .onnx file or a checkpoint (exported into work/)."""
    if source.is_dir():
        entry = read_manifest(source).vocoder
        if entry.kind != "fourier":
            raise SystemExit(f"{source}'s vocoder is {entry.kind}, not the Fourier vocoder; pass --fourier")
        return source / str(entry.file)
    if source.suffix == ".onnx":
        return source
    from c2d.export.exporter import export_vocoder, source_commit

    out = work / f"fourier-{source.stem}.onnx"
    export_vocoder("fourier", DEFAULT_MEL, source_commit(), out, source)
    return out


def hifigan_onnx(work: Path) -> Path:
    from c2d.export.exporter import export_vocoder, source_commit

    out = work / "hifigan.onnx"
    if not out.is_file():
        export_vocoder("hifigan", DEFAULT_MEL, source_commit(), out)
    return out


def test_set(data=None) -> tuple[np.ndarray, np.ndarray]:
    """(log-Mels [300, n_mels, T] as the generator's space holds them, original clips [300, CLIP]) of the test split."""
    from c2d.models.data import list_clips, load_features, read_resampled

    features = load_features("test", data)
    clips = [c for c in list_clips(data) if c.split == "test"]
    originals = np.stack([fit_clip(read_resampled(c.path, DEFAULT_MEL.sample_rate), CLIP) for c in clips])
    return denormalize(features.x[:, 0]), originals
