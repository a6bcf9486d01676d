"""The quality gate: a candidate generator (a quantized bundle, another backend or precision) against the fp32
reference on the same digits, seeds and sampler noise. numpy only; a digit classifier can be passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from c2d.runtime.generate import Generation


@dataclass(frozen=True)
class Budget:
    """What a candidate may lose against the fp32 reference (checked on samples from the same noise)."""

    step_error: float = 0.05  # worst step of the trajectory: median over samples of |eps_q - eps| / |eps|
    mel_distance: float = 0.35  # mean |log-Mel difference| of the final samples, nats
    accuracy_drop: float = 0.02  # evaluator accuracy on generated digits, fp32 minus quantized
    count: int = 5  # samples per digit for the gate
    steps: int | None = None  # sampler steps of the gate run [default: the recording's, else the sampler's]
    by_interval: bool = False  # pass only if the upper end of the 95 % interval is within budget (else: the point value)


class RecordingBackend:
    """Wraps a backend and keeps a copy of every feed it runs (the graph's inputs, exactly as the sampler sent them)
    and, with keep_outputs, of every output it returned."""

    def __init__(self, backend, keep_outputs: bool = False):
        self.backend, self.keep_outputs = backend, keep_outputs
        self.name, self.input_names, self.output_names = backend.name, backend.input_names, backend.output_names
        self.calls: list[dict[str, np.ndarray]] = []
        self.outputs: list[dict[str, np.ndarray]] = []

    def metadata(self) -> dict[str, str]:
        return self.backend.metadata()

    def run(self, feeds, outputs=None):
        self.calls.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        result = self.backend.run(feeds, outputs)
        if self.keep_outputs:
            self.outputs.append({name: np.array(v, copy=True) for name, v in zip(outputs or self.output_names, result)})
        return result


def relative_errors(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per sample |out - ref| / |ref| (L2 over all but the batch axis): [B]."""
    axes = tuple(range(1, ref.ndim))
    return np.sqrt(((out - ref) ** 2).sum(axes)) / np.maximum(np.sqrt((ref**2).sum(axes)), 1e-12)


def backend_eps(backend) -> Callable[[dict], np.ndarray]:
    return lambda feeds: backend.run(feeds, ["eps"])[0]


def reference_eps(ref_eps: Callable[[dict], np.ndarray], calls: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The reference's eps on each call, computed once for any number of candidates."""
    return [ref_eps(feeds) for feeds in calls]


def replay_sample_errors(refs: list[np.ndarray], eps: Callable[[dict], np.ndarray], calls: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Relative eps error of `eps` against the reference outputs refs, per call and sample: [calls, samples]."""
    out = []
    for ref, feeds in zip(refs, calls, strict=True):
        got = eps(feeds)
        if not np.isfinite(got).all():
            return np.full((len(calls), len(ref)), np.inf)
        out.append(relative_errors(ref, got))
    return np.array(out)


def replay_errors(refs: list[np.ndarray], eps: Callable[[dict], np.ndarray], calls: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Median-over-samples relative eps error of `eps` against the reference outputs refs on each call: [calls]."""
    return np.median(replay_sample_errors(refs, eps, calls), axis=1)


BOOTSTRAP_ROUNDS = 2000


def bootstrap_interval(per_sample: np.ndarray, statistic: Callable[[np.ndarray], float], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(per_sample[..., idx]) over resampled samples (the last axis)."""
    if not np.isfinite(per_sample).all():
        return float("inf"), float("inf")
    rng = np.random.default_rng(seed)
    n = per_sample.shape[-1]
    values = [statistic(per_sample[..., rng.integers(0, n, n)]) for _ in range(BOOTSTRAP_ROUNDS)]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def worst_step_error(errors: np.ndarray) -> float:
    """The gate's step error from [calls, samples] errors: the worst step's median over samples."""
    return float(np.median(errors, axis=-1).max())


def mean_over_samples(values: np.ndarray) -> float:
    return float(values.mean())


@dataclass
class GateResult:
    step_errors: list[float]  # median-over-samples relative eps error at each step of the fp32 trajectory
    mel_distance: float  # mean |log-Mel difference| of the final samples (nats)
    accuracy_fp32: float | None
    accuracy: float | None
    samples: int
    failures: list[str]
    step_error_interval: tuple[float, float] | None = None  # 95 % bootstrap interval of max(step_errors) over samples
    mel_distance_interval: tuple[float, float] | None = None

    def summary(self) -> dict:
        out: dict[str, object] = {
            "max_step_error": round(max(self.step_errors), 5),
            "median_step_error": round(float(np.median(self.step_errors)), 5),
            "mel_distance": round(self.mel_distance, 4),
            "accuracy_fp32": self.accuracy_fp32,
            "accuracy": self.accuracy,
            "samples": self.samples,
        }
        if self.step_error_interval is not None and self.mel_distance_interval is not None:
            out["max_step_error_95"] = [round(v, 5) for v in self.step_error_interval]
            out["mel_distance_95"] = [round(v, 4) for v in self.mel_distance_interval]
        return out


@dataclass
class ReferenceRun:
    """The fp32 reference's samples for a gate, with every graph call it made and the eps it returned."""

    generation: Generation  # log-Mels, digits
    calls: list[dict[str, np.ndarray]]
    eps: list[np.ndarray]
    seed: int
    sampler: str
    steps: int | None
    count: int


def reference_run(ref, budget: Budget, seed: int = 10_000, sampler: str | None = None, steps: int | None = None) -> ReferenceRun:
    """Sample every digit budget.count times with the reference generator, recording its calls and eps: one run
    serves any number of candidates. Sampler: `sampler`, else the bundle's default; steps: budget.steps, else
    `steps`, else the bundle's default for its sampler, else the sampler's own."""
    sampler, steps = ref.sampler_and_steps(sampler, budget.steps or steps)
    recorder = RecordingBackend(ref.model, keep_outputs=True)
    ref.model = recorder
    digits = list(range(len(ref.meta.labels)))
    try:
        gen = ref.sample(digits, budget.count, seed, steps, sampler, batch_size=len(digits) * budget.count, vocode=False)
    finally:
        ref.model = recorder.backend
    return ReferenceRun(gen, recorder.calls, [o["eps"] for o in recorder.outputs], seed, sampler, steps, budget.count)


def compare(run: ReferenceRun, quant, budget: Budget, accuracy: Callable[[np.ndarray, list[int]], float] | None = None) -> GateResult:
    """A candidate generator against a reference run on the same digits, seeds and sampler noise."""
    a = run.generation
    samples = len(a.digits)
    try:
        b = quant.sample(sorted(set(a.digits)), run.count, run.seed, run.steps, run.sampler, batch_size=samples, vocode=False)
    except ValueError as exc:  # GenerationError: non-finite output
        return GateResult([float("inf")], float("inf"), None, None, samples, [str(exc)])
    per_sample = replay_sample_errors(run.eps, backend_eps(quant.model), run.calls)  # [calls, samples]
    step_errors = np.median(per_sample, axis=1).tolist()
    mel_per_sample = np.abs(a.log_mel - b.log_mel).reshape(samples, -1).mean(axis=1)  # [samples]
    mel = float(mel_per_sample.mean())
    step_interval = bootstrap_interval(per_sample, worst_step_error)
    mel_interval = bootstrap_interval(mel_per_sample, mean_over_samples)
    acc_a = acc_b = None
    if accuracy is not None:
        acc_a, acc_b = accuracy(a.log_mel, a.digits), accuracy(b.log_mel, b.digits)
    failures = []
    step_value, mel_value = (step_interval[1], mel_interval[1]) if budget.by_interval else (max(step_errors), mel)
    if step_value > budget.step_error:
        failures.append(f"per-step eps error {max(step_errors):.4f} {interval_text(step_interval)} > budget {budget.step_error}")
    if mel_value > budget.mel_distance:
        failures.append(f"final log-Mel distance {mel:.4f} {interval_text(mel_interval)} > budget {budget.mel_distance}")
    if acc_a is not None and acc_b is not None and acc_a - acc_b > budget.accuracy_drop + 1e-9:
        failures.append(f"digit accuracy {acc_b:.3f} vs fp32 {acc_a:.3f}: drop > budget {budget.accuracy_drop}")
    return GateResult(step_errors, mel, acc_a, acc_b, samples, failures, step_interval, mel_interval)


def interval_text(interval: tuple[float, float]) -> str:
    return f"(95 % interval {interval[0]:.4f} to {interval[1]:.4f})"


def quality_gate(
    ref,
    quant,
    budget: Budget,
    accuracy: Callable[[np.ndarray, list[int]], float] | None = None,
    seed: int = 10_000,
    sampler: str | None = None,
    steps: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> GateResult:
    """Same digits, seeds and sampler noise through two generators (the fp32 reference and a candidate: a quantized
    bundle, or another backend or precision). accuracy(log_mel, digits): a digit classifier's accuracy, if any.
    The seeds differ from the calibration run's (held out). Sampler and steps as in reference_run."""
    start = time.perf_counter()
    run = reference_run(ref, budget, seed, sampler, steps)
    log(f"  the reference ran {len(run.calls)} steps in {time.perf_counter() - start:.0f} s; now the candidate on the same noise")
    result = compare(run, quant, budget, accuracy)
    worst = f"worst step error {max(result.step_errors):.4f} (budget {budget.step_error})"
    log(f"  {worst}, log-Mel distance {result.mel_distance:.3f} (budget {budget.mel_distance})")
    return result
