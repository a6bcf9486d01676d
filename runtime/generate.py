"""The on-device generator: bundle + backend -> sampler loop -> log-Mel -> vocoder -> waveform. numpy only.

from c2d.runtime import load
gen = load()                                   # the bundle shipped in the package, ONNX Runtime CPU
audio = gen.generate("seven", count=2)         # float32 [2, 22050] in [-1, 1] at gen.sample_rate
"""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path

import numpy as np

from c2d.runtime.audio import denormalize, normalize_peak
from c2d.runtime.backends import BackendOptions, open_backend
from c2d.runtime.bundle import BundleError, GeneratorMeta, VocoderMeta, bundle_file, decode_metadata, read_manifest
from c2d.runtime.contract import GENERATOR_INPUTS, GENERATOR_OUTPUTS, MANIFEST_FILE, VOCODER_INPUT, VOCODER_OUTPUT
from c2d.runtime.errors import C2DError
from c2d.runtime.limits import (
    MAX_BATCH,
    MAX_GUIDANCE,
    MAX_LOG_MEL_SAMPLES,
    MAX_SAMPLES,
    MAX_SEED_START,
    MAX_STEPS,
    MIN_PEAK_DBFS,
    REASONS,
    check_float,
    check_int,
)
from c2d.runtime.samplers import SAMPLERS, SCHEDULES, draw_noise_per_step, ode_warning, resolve_sampler
from c2d.runtime.vocoder import GriffinLim, check_log_mel

SHIPPED_BUNDLE = "small"  # what runs when no bundle is named; runtime/bundles/ may ship others beside it
DEFAULT_BATCH = 8  # samples per graph call
DEFAULT_PEAK_DBFS = -1.0  # WAV peak level: every digit equally loud and never clipped (FSDD recording levels vary widely)


class GenerationError(C2DError, ValueError):
    """Bad request (digit, steps, guidance) or a run that went wrong (non-finite values)."""


def default_bundle() -> Path:
    """The bundle shipped inside the package (runtime/bundles/) that runs when none is named."""
    return Path(str(files("c2d.runtime") / "bundles" / SHIPPED_BUNDLE))


def shipped_bundles() -> dict[str, Path]:
    """Name -> folder of every bundle shipped inside the package (runtime/bundles/NAME), the default first."""
    root = Path(str(files("c2d.runtime") / "bundles"))
    found = {p.name: p for p in sorted(root.iterdir()) if (p / MANIFEST_FILE).is_file()}
    return {SHIPPED_BUNDLE: found.pop(SHIPPED_BUNDLE), **found} if SHIPPED_BUNDLE in found else found


def resolve_bundle(bundle: str | Path | None) -> Path:
    """A bundle folder; or the name of a bundle shipped in the package ("student") where no such folder exists here;
    None: the default bundle."""
    if bundle is None:
        return default_bundle()
    path = Path(bundle)
    if not path.exists() and isinstance(bundle, str) and bundle in (shipped := shipped_bundles()):
        return shipped[bundle]
    return path


def parse_digit(value: str | int, labels: Sequence[str]) -> int:
    """ "7", 7, numpy.int64(7) or "seven" (any case) -> 7."""
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise GenerationError(f"a digit is an integer or a name, got {value!r} ({type(value).__name__})")
    text = str(value).strip().lower()
    if text.isdigit() and int(text) < len(labels):
        return int(text)
    if text in labels:
        return list(labels).index(text)
    raise GenerationError(f"unknown digit {value!r}: use 0-{len(labels) - 1} or one of {', '.join(labels)}")


@dataclass
class Generation:
    """One generate call: inputs, outputs and where the time went."""

    digits: list[int]
    seeds: list[int]
    log_mel: np.ndarray  # [B, n_mels, T] natural-log Mel (what the vocoder reads)
    audio: np.ndarray  # [B, samples] float32 in [-1, 1]
    sample_rate: int
    steps: int
    sampler: str
    guidance: float
    sampling_seconds: float
    vocoder_seconds: float

    @property
    def audio_seconds(self) -> float:
        return self.audio.shape[0] * self.audio.shape[1] / self.sample_rate

    @property
    def real_time_factor(self) -> float:
        """Wall time / duration of the audio produced (below 1: faster than real time; inf without audio)."""
        return (self.sampling_seconds + self.vocoder_seconds) / self.audio_seconds if self.audio_seconds else float("inf")


class OnnxVocoder:
    """An exported vocoder run by a backend: log-Mel [B, n_mels, T] -> [B, T * hop]."""

    def __init__(self, backend, meta: VocoderMeta):
        self.backend, self.meta = backend, meta
        self.name, self.sample_rate = meta.name, meta.sample_rate

    def __call__(self, log_mel: np.ndarray) -> np.ndarray:
        """[B, n_mels, T] natural-log Mel -> [B, T * hop]; VocoderInputError for a wrong shape or non-finite values."""
        wave = self.backend.run({VOCODER_INPUT: check_log_mel(log_mel, self.meta.mel.n_mels)})[0][:, 0]
        if not np.isfinite(wave).all():
            raise GenerationError(f"the {self.name} vocoder returned non-finite samples; the bundle may be broken")
        return wave


class Generator:
    def __init__(
        self, bundle: str | Path | None = None, backend: str = "ort", options: BackendOptions | None = None, vocoder_precision: str | None = None
    ):
        """vocoder_precision: the vocoder's own precision on this backend [default: options.precision] (a deployment
        profile runs it at full precision where it missed its parity budget at the generator's)."""
        self.bundle = resolve_bundle(bundle)
        self.manifest = read_manifest(self.bundle)
        self.backend_name = backend
        self.backend_note = backend
        path = bundle_file(self.bundle, str(self.manifest.generator.file))
        self.model = open_backend(backend, path, options)
        meta = decode_metadata(self.model.metadata(), str(path))
        if not isinstance(meta, GeneratorMeta):
            raise BundleError(f"{self.bundle}: the generator file holds a {type(meta).__name__}")
        check_io(path, self.model, GENERATOR_INPUTS, GENERATOR_OUTPUTS[:1], {"x": [1, meta.mel.n_mels, meta.n_frames], "y": [len(meta.labels)]})
        self.meta: GeneratorMeta = meta
        if vocoder_precision is not None:
            options = replace(options or BackendOptions(), precision=vocoder_precision)
        self.vocoder = self._load_vocoder(backend, options)

    def _load_vocoder(self, backend: str, options: BackendOptions | None):
        entry = self.manifest.vocoder
        if entry.kind == "griffin-lim" or entry.file is None:
            return GriffinLim(self.meta.mel)
        path = bundle_file(self.bundle, entry.file)
        vb = open_backend(backend, path, options)
        vmeta = decode_metadata(vb.metadata(), str(path))
        if not isinstance(vmeta, VocoderMeta):
            raise BundleError(f"{self.bundle}: the vocoder file holds a {type(vmeta).__name__}")
        check_io(path, vb, (VOCODER_INPUT,), (VOCODER_OUTPUT,), {VOCODER_INPUT: [vmeta.mel.n_mels]})
        if (vmeta.mel.n_mels, vmeta.mel.sample_rate, vmeta.hop_length) != (self.meta.mel.n_mels, self.meta.mel.sample_rate, self.meta.mel.hop_length):
            raise BundleError(f"{self.bundle}: the vocoder's mel space does not match the generator's")
        return OnnxVocoder(vb, vmeta)

    @property
    def sample_rate(self) -> int:
        return self.vocoder.sample_rate

    def eps_fn(self, digits: Sequence[int], guidance: float, on_step: Callable[[int, float], None] | None = None):
        """(x [B, 1, n_mels, T], t) -> guided eps from the graph; fails on non-finite output."""
        y = np.eye(len(self.meta.labels), dtype=np.float32)[list(digits)]
        calls = [0]

        def eps(x: np.ndarray, t: float) -> np.ndarray:
            b = x.shape[0]
            feeds = {"x": np.asarray(x, np.float32), "t": np.full(b, t, np.float32), "y": y[:b], "gamma": np.full(b, guidance, np.float32)}
            out = self.model.run(feeds, ["eps"])[0]
            if out.shape != x.shape:
                raise GenerationError(f"the model returned eps of shape {list(out.shape)} for x of shape {list(x.shape)}; the bundle is broken")
            if not np.isfinite(out).all():
                raise GenerationError(
                    f"the model returned non-finite values at step {calls[0] + 1} (t={t:.4f}); the bundle may be broken or quantized too aggressively"
                )
            if not out.any():  # a trained network never predicts exactly zero noise: the result would be pure noise
                raise GenerationError(f"the model returned all zeros at step {calls[0] + 1} (t={t:.4f}); the bundle is broken")
            calls[0] += 1
            if on_step is not None:
                on_step(calls[0], t)
            return out

        return eps

    def sampler_and_steps(self, sampler: str | None = None, steps: int | None = None) -> tuple[str, int]:
        """The run's sampler and step count: what was asked for, else the bundle's default sampler and steps."""
        try:
            return resolve_sampler(sampler, steps, self.meta.default_sampler, self.meta.default_steps)
        except ValueError as exc:
            raise GenerationError(str(exc)) from exc

    def sample(
        self,
        digits: Sequence[int | str] | int | str,
        count: int = 1,
        seed: int = 0,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        batch_size: int = DEFAULT_BATCH,
        on_step: Callable[[int, float], None] | None = None,
        vocode: bool = True,
        peak_dbfs: float | None = DEFAULT_PEAK_DBFS,
    ) -> Generation:
        """count samples of each digit; sample k of the run uses seed + k, whatever the batching. sampler and steps
        default to the bundle's (metadata default_sampler, default_steps).
        vocode=False stops at the log-Mel (audio is then empty [B, 0]). Each waveform is scaled to peak at
        peak_dbfs (None: the level the model produced, clipped to [-1, 1])."""
        parts = list(self.sample_batches(digits, count, seed, steps, sampler, guidance, batch_size, on_step, vocode, peak_dbfs))
        first = parts[0]
        return Generation(
            [d for p in parts for d in p.digits],
            [s for p in parts for s in p.seeds],
            np.concatenate([p.log_mel for p in parts]),
            np.concatenate([p.audio for p in parts]),
            first.sample_rate,
            first.steps,
            first.sampler,
            first.guidance,
            sum(p.sampling_seconds for p in parts),
            sum(p.vocoder_seconds for p in parts),
        )

    def sample_batches(
        self,
        digits: Sequence[int | str] | int | str,
        count: int = 1,
        seed: int = 0,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        batch_size: int = DEFAULT_BATCH,
        on_step: Callable[[int, float], None] | None = None,
        vocode: bool = True,
        peak_dbfs: float | None = DEFAULT_PEAK_DBFS,
    ) -> Iterator[Generation]:
        """The samples of sample(), batch_size at a time, each batch vocoded as soon as it is sampled: a caller that
        writes each batch out holds memory for one batch, however many samples the run makes. The request is
        checked before the first batch is made."""
        wanted_digits, count, seed, steps, guidance, batch_size = self._check_request(digits, count, seed, steps, guidance, batch_size, vocode)
        if peak_dbfs is not None:
            try:
                peak_dbfs = check_float("peak_dbfs", peak_dbfs, MIN_PEAK_DBFS, 0.0, REASONS["peak_dbfs"])
            except ValueError as exc:
                raise GenerationError(str(exc)) from None
        sampler, steps = self.sampler_and_steps(sampler, steps)
        spec = SAMPLERS[sampler]
        warning = ode_warning(sampler, self.meta.gaussian_skip)
        if warning:
            warnings.warn(warning, stacklevel=2)
        wanted = [parse_digit(d, self.meta.labels) for d in wanted_digits for _ in range(count)]
        seeds = [seed + k for k in range(len(wanted))]
        return self._batches(wanted, seeds, spec, sampler, steps, guidance, batch_size, on_step, vocode, peak_dbfs)

    def _batches(self, wanted, seeds, spec, sampler, steps, guidance, batch_size, on_step, vocode, peak_dbfs) -> Iterator[Generation]:
        shape = (1, self.meta.mel.n_mels, self.meta.n_frames)
        ts = SCHEDULES[spec.default_schedule](steps, self.meta.sde)
        for i in range(0, len(wanted), batch_size):
            chunk_digits, chunk_seeds = wanted[i : i + batch_size], seeds[i : i + batch_size]
            start = time.perf_counter()
            x_T, noise = draw_noise_per_step(chunk_seeds, steps if spec.stochastic else 0, shape)
            x0 = spec.fn(self.eps_fn(chunk_digits, guidance, on_step), x_T, noise, ts, self.meta.sde)[:, 0]  # [b, n_mels, T]
            sampling = time.perf_counter() - start
            log_mel = denormalize(x0, self.meta.mel)
            start = time.perf_counter()
            if vocode:
                audio = self.vocoder(log_mel)[:, : self.meta.mel.clip_samples]
                audio = normalize_peak(audio, peak_dbfs) if peak_dbfs is not None else audio
            else:
                audio = np.zeros((len(log_mel), 0), np.float32)
            vocoding = time.perf_counter() - start
            yield Generation(
                chunk_digits,
                chunk_seeds,
                log_mel,
                np.clip(audio, -1.0, 1.0).astype(np.float32),
                self.sample_rate,
                steps,
                sampler,
                guidance,
                sampling,
                vocoding,
            )

    def _check_request(
        self, digits, count, seed, steps, guidance, batch_size, vocode: bool = True
    ) -> tuple[list[int | str], int, int, int | None, float, int]:
        """Types and bounds of a sample() request (runtime/limits.py); GenerationError naming the argument."""
        if isinstance(digits, (str, numbers.Integral)):
            digits = [digits]
        try:
            digits = list(digits)
        except TypeError:
            raise GenerationError(f"digits must be a digit or a list of digits, got {digits!r}") from None
        if not digits:
            raise GenerationError("no digits given: ask for at least one (0-9 or its name)")
        try:
            most = MAX_SAMPLES if vocode else MAX_LOG_MEL_SAMPLES
            reason = REASONS["samples"] if vocode else f"at most {MAX_LOG_MEL_SAMPLES} log-Mel samples per run"
            count = check_int("count", count, 1, most, reason)
            if len(digits) * count > most:
                raise ValueError(f"{len(digits)} digits x count {count} = {len(digits) * count} samples; {reason}")
            seed = check_int("seed", seed, 0, MAX_SEED_START, REASONS["seed"])
            steps = None if steps is None else check_int("steps", steps, 1, MAX_STEPS, REASONS["steps"])
            guidance = self.meta.default_guidance if guidance is None else check_float("guidance", guidance, 0.0, MAX_GUIDANCE, REASONS["guidance"])
            batch_size = check_int("batch size", batch_size, 1, MAX_BATCH, REASONS["batch"])
        except ValueError as exc:
            raise GenerationError(str(exc)) from None
        return digits, count, seed, steps, guidance, batch_size

    def generate(self, digits, count: int = 1, **kwargs) -> np.ndarray:
        """Waveforms [B, samples], float32 in [-1, 1] at self.sample_rate."""
        return self.sample(digits, count, **kwargs).audio


def check_io(path: Path, backend, inputs: Sequence[str], outputs: Sequence[str], trailing: dict[str, list[int]]) -> None:
    """The graph has the inputs and outputs the runtime feeds and reads, with the trailing dims its metadata says."""
    from c2d.runtime.backends import onnx_io_shapes

    missing = [n for n in inputs if n not in backend.input_names] + [n for n in outputs if n not in backend.output_names]
    if missing:
        raise BundleError(
            f"{path}: the graph lacks {', '.join(missing)} (inputs {list(backend.input_names)}, outputs "
            f"{list(backend.output_names)}); it is not a c2d export"
        )
    try:
        shapes = onnx_io_shapes(path)
    except Exception as exc:  # onnx's DecodeError and friends
        raise BundleError(f"{path}: cannot read the graph's shapes ({exc})") from exc
    for name, dims in trailing.items():
        have = shapes.get(name, [])[-len(dims) :]
        if len(have) == len(dims) and any(isinstance(h, int) and h > 0 and h != d for h, d in zip(have, dims)):
            raise BundleError(f"{path}: input {name} has trailing dims {have}, its metadata says {dims}; the bundle is inconsistent")


def load(bundle: str | Path | None = None, backend: str | None = None, options: BackendOptions | None = None) -> Generator:
    """Open a bundle (default: the one shipped in the package) on a backend ("ort", "openvino", "trt"). backend None:
    the deployment profile recorded for this generator file on this machine (`c2d profile --backend all`: the per-user
    cache, or the bundle's own deployment.json), else "ort"; where that profile chose a quantized bundle made from
    this one (`--also`), that bundle runs instead.
    The generator's `backend_note` says which backend runs and why."""
    bundle = resolve_bundle(bundle)
    note, vocoder_precision = f"{backend} (asked for)", None
    if backend is None:
        from c2d.runtime.deployment import read_choice

        choice, why = read_choice(bundle)
        options = options or BackendOptions()
        if choice is None:
            backend, note = "ort", f"ort fp32 ({why})"
        else:
            backend, note = choice.candidate.backend, f"{choice.candidate.label} ({why})"
            if choice.vocoder_precision not in (None, choice.candidate.precision):
                vocoder_precision, note = choice.vocoder_precision, f"{choice.candidate.label}, vocoder {choice.vocoder_precision} ({why})"
            bundle = choice.bundle or bundle
            options = replace(options, precision=None if backend == "ort" else choice.candidate.precision, threads=options.threads or choice.threads)
    gen = Generator(bundle, backend, options, vocoder_precision)
    gen.backend_note = note
    return gen
