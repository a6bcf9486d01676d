"""`c2d profile`: latency, memory and real-time factor of a bundle on this machine. numpy + backend only.

Per-step latency is the time between consecutive model calls inside a real sampling run (graph call plus the
sampler's update), after a short warm-up run. The CPU's peak is measured in the same process by a large fp32
matmul, so "achieved GMAC/s" is comparable across machines. Peak memory is the process's peak resident set
(ru_maxrss): run one profile per process (as `c2d profile` does) for a clean figure.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2d.runtime.backends import BackendOptions
from c2d.runtime.files import pyplot, save_figure
from c2d.runtime.generate import Generator, resolve_bundle
from c2d.runtime.machine import load_note, machine_record, provenance


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far: VmHWM on Linux (ru_maxrss there survives exec, so a child
    would report its parent's peak), else ru_maxrss (macOS reports bytes)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


NOISY_CV = 0.10  # coefficient of variation of the per-step latency above which a profile warns that it is noisy
DEFAULT_WARMUP = 2  # sampler steps before timing: allocations, first-call costs, thread pools spinning up


@dataclass(frozen=True)
class Measure:
    """How long to measure: `warmup` sampler steps untimed, then whole sampling runs until at least `iterations`
    steps were timed, or for at least `duration` seconds (at least one run either way); per_op: also break one
    run's graph calls down by operator type (in a separate pass, so the latency figures carry no profiler cost)."""

    warmup: int = DEFAULT_WARMUP
    iterations: int | None = None
    duration: float | None = None
    per_op: bool = False

    def __post_init__(self):
        if self.iterations is not None and self.duration is not None:
            raise ValueError("give iterations or duration, not both")
        if self.warmup < 0 or (self.iterations is not None and self.iterations < 1) or (self.duration is not None and not self.duration > 0):
            raise ValueError(f"warmup must be >= 0, iterations >= 1 and duration > 0 (got {self})")

    def more(self, timed_steps: int, elapsed_s: float, runs: int) -> bool:
        """Whether to start another sampling run."""
        if runs == 0:
            return True
        if self.duration is not None:
            return elapsed_s < self.duration
        return timed_steps < (self.iterations or 0)


def latency_stats(ms: Sequence[float]) -> dict:
    """min / mean / p50 / p90 / p99 / max, standard deviation and coefficient of variation of a list of timings."""
    v = np.asarray(ms, dtype=np.float64)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    pct = {f"p{q}": float(np.percentile(v, q)) for q in (10, 50, 90, 99)}
    return {
        "n": len(v),
        "min": float(v.min()),
        "mean": mean,
        **pct,
        "median": pct["p50"],
        "max": float(v.max()),
        "std": std,
        "cv": std / mean if mean else 0.0,
    }


def peak_for(backend: str, precision: str, backend_precision: str | None, threads: int | None, device: str) -> tuple[str, float] | None:
    """(label, GMAC/s) of a large GEMM on the same engine, precision and threads as the profiled run; None where no
    such CPU measurement applies (a GPU, an engine that is not installed)."""
    from c2d.runtime.peaks import engine_peak

    if device != "cpu" or backend not in ("ort", "openvino"):
        return None
    return engine_peak(backend, precision, backend_precision, threads)


def profile_bundle(
    bundle: str | Path | None = None,
    backend: str = "ort",
    steps: int | None = None,
    batch: int = 1,
    sampler: str | None = None,
    threads: int | None = None,
    device: str = "cpu",
    measure: Measure = Measure(),
    openvino_precision: str | None = None,
) -> dict:
    """Every field of the profile for one bundle / backend / batch size."""
    bundle = resolve_bundle(bundle)
    load_before = load_note()
    start = time.perf_counter()
    gen = Generator(bundle, backend, BackendOptions(device=device, threads=threads, precision=openvino_precision))
    load_s = time.perf_counter() - start
    sampler, steps = gen.sampler_and_steps(sampler, steps)
    digits = [str(i % 10) for i in range(batch)]
    if measure.warmup:
        gen.sample(digits, steps=measure.warmup, sampler=sampler, batch_size=batch)
    step_ms: list[float] = []
    runs: list[dict] = []
    measuring = time.perf_counter()
    while measure.more(len(step_ms), time.perf_counter() - measuring, len(runs)):
        stamps = [time.perf_counter()]
        stamp = stamps.append
        result = gen.sample(
            digits, steps=steps, sampler=sampler, batch_size=batch, seed=len(runs), on_step=lambda *_, add=stamp: add(time.perf_counter())
        )
        step_ms += (np.diff(stamps) * 1e3).tolist()
        runs.append({"sampling_s": result.sampling_seconds, "vocoder_s": result.vocoder_seconds})
    end_to_end = [r["sampling_s"] + r["vocoder_s"] for r in runs]
    median_run = runs[int(np.argsort(end_to_end)[len(runs) // 2])]
    audio_s = batch * gen.meta.mel.clip_seconds
    total = median_run["sampling_s"] + median_run["vocoder_s"]
    stats = latency_stats(step_ms)
    macs = gen.meta.macs_per_step * batch
    achieved = macs / (stats["p50"] / 1e3) / 1e9
    record = machine_record()
    emulated = "emulation" in record  # an emulated GEMM says nothing about the device: not measured
    peak = None if emulated else peak_for(backend, gen.meta.precision, openvino_precision, threads, device)
    files = {e.file: e.bytes or (bundle / e.file).stat().st_size for e in (gen.manifest.generator, gen.manifest.vocoder) if e.file}
    warnings = []
    if stats["cv"] > NOISY_CV:
        warnings.append(f"noisy: the per-step latency varied by {stats['cv'] * 100:.0f} % (coefficient of variation) over {stats['n']} steps")
    for note in (load_before, load_note()):
        if note and (warnings or stats["cv"] > NOISY_CV / 2) and note not in warnings:
            warnings.append(note)
    if emulated:
        warnings.append(record["emulation"])
    profile: dict = {
        "bundle": str(bundle),
        "generator_sha256": gen.manifest.generator.sha256,
        "variant": gen.meta.variant,
        "precision": gen.meta.precision,
        "backend": backend,
        "backend_precision": openvino_precision,
        "device": device,
        "threads": threads or os.cpu_count(),
        "sampler": sampler,
        "steps": steps,
        "batch": batch,
        "vocoder": gen.vocoder.name,
        "warmup_steps": measure.warmup,
        "runs": len(runs),
        "step_ms": stats,
        "step_ms_all": step_ms,
        "end_to_end_s": total,
        "end_to_end_s_stats": latency_stats(end_to_end),
        "sampling_s": median_run["sampling_s"],
        "vocoder_s": median_run["vocoder_s"],
        "vocoder_share": median_run["vocoder_s"] / total,
        "real_time_factor": total / audio_s,
        "audio_s": audio_s,
        "load_s": load_s,
        "peak_rss_mb": peak_rss_mb(),
        "file_bytes": files,
        "macs_per_step": macs,
        "achieved_gmacs_per_s": achieved,
        "peak": None if peak is None else {"gemm": peak[0], "gmacs_per_s": peak[1]},
        "fraction_of_peak": achieved / peak[1] if peak else None,
        "warnings": warnings,
        "machine": record,
        "provenance": provenance(),
    }
    if measure.per_op:
        profile["per_op"] = per_op_breakdown(gen, digits, steps, sampler, batch, backend, threads, openvino_precision)
    return profile


def per_op_breakdown(gen: Generator, digits, steps: int, sampler: str, batch: int, backend: str, threads: int | None, precision: str | None) -> dict:
    """Milliseconds per step by operator type, from the engine's own profiler over the graph calls of one run
    (recorded, then replayed under the profiler): ONNX Runtime's profiling output, OpenVINO's performance counters."""
    from c2d.runtime.gate import RecordingBackend
    from c2d.runtime.opstats import openvino_kernel_times, ort_kernel_times

    recorder = RecordingBackend(gen.model)
    gen.model = recorder
    try:
        gen.sample(digits, steps=steps, sampler=sampler, batch_size=batch, vocode=False)
    finally:
        gen.model = recorder.backend
    path = gen.bundle / str(gen.manifest.generator.file)
    if backend == "ort":
        per_type: dict[str, float] = {}
        for op, _, ms in ort_kernel_times(path, recorder.calls, threads or os.cpu_count() or 1):
            per_type[op] = per_type.get(op, 0.0) + ms
    elif backend == "openvino":
        per_type = openvino_kernel_times(path, recorder.calls, threads or os.cpu_count() or 1, precision or "f32")
    else:
        return {"engine": backend, "unavailable": f"no per-operator breakdown for {backend}"}
    total = sum(per_type.values())
    ordered = sorted(per_type.items(), key=lambda kv: -kv[1])
    return {
        "engine": backend,
        "calls": len(recorder.calls),
        "ms_per_step": dict(ordered),
        "share": {k: v / total for k, v in ordered} if total else {},
    }


def profile_markdown(p: dict) -> str:
    s = p["step_ms"]
    e2e = p["end_to_end_s_stats"]
    peak = p.get("peak")
    rows = [
        ("bundle", f"{p['bundle']} ({p['variant']}, {p['precision']})"),
        (
            "backend / device / threads",
            f"{p['backend']}{' ' + p['backend_precision'] if p.get('backend_precision') else ''} / {p['device']} / {p['threads']}",
        ),
        ("sampler, steps, batch", f"{p['sampler']}, {p['steps']}, {p['batch']}"),
        ("measured", f"{s['n']} steps in {p['runs']} runs after {p['warmup_steps']} warm-up steps"),
        (
            "per-step latency, ms: min / mean / p50 / p90 / p99 / max",
            f"{s['min']:.2f} / {s['mean']:.2f} / {s['p50']:.2f} / {s['p90']:.2f} / {s['p99']:.2f} / {s['max']:.2f}",
        ),
        ("coefficient of variation", f"{s['cv'] * 100:.1f} %"),
        ("end to end (sampling + vocoder), median run", f"{p['end_to_end_s']:.3f} s ({p['sampling_s']:.3f} + {p['vocoder_s']:.3f})"),
        ("end to end over runs: min / p50 / max", f"{e2e['min']:.3f} / {e2e['p50']:.3f} / {e2e['max']:.3f} s"),
        (f"vocoder ({p['vocoder']}) share", f"{p['vocoder_share'] * 100:.1f} %"),
        (f"real-time factor ({p['audio_s']:g} s of audio)", f"{p['real_time_factor']:.3f}"),
        ("model load", f"{p['load_s']:.3f} s"),
        ("peak resident memory", f"{p['peak_rss_mb']:.0f} MB"),
        ("files", ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in p["file_bytes"].items())),
        ("MACs per step", f"{p['macs_per_step'] / 1e9:.3f} G"),
        (
            "achieved (at p50)",
            f"{p['achieved_gmacs_per_s']:.1f} GMAC/s"
            + (f" = {p['fraction_of_peak'] * 100:.1f} % of the {peak['gemm']} GEMM peak here ({peak['gmacs_per_s']:.0f} GMAC/s)" if peak else ""),
        ),
        ("machine", machine_line(p["machine"])),
    ]
    lines = ["| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if "per_op" in p and "ms_per_step" in p["per_op"]:
        op = p["per_op"]
        lines += [
            "",
            f"Per operator type ({op['engine']}'s profiler, {op['calls']} calls):",
            "",
            "| operator | ms per step | share |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v:.3f} | {op['share'][k] * 100:.1f} % |" for k, v in list(op["ms_per_step"].items())[:12]]
    return "\n".join(lines) + "\n"


def machine_line(m: dict) -> str:
    engines = ", ".join(f"{k} {v.split('-')[0]}" for k, v in m.get("engines", {}).items())
    isa = " ".join(m["isa"]) or "no listed ISA extensions"
    emulated = " **emulated on this host CPU: timings are not device latency**" if m.get("emulation") else ""
    return f"{m['cpu']} ({m['arch']}; {isa}){emulated}, {m['cores']} cores, {m['os']}, Python {m['python']}, {engines}"


def plot_profile(p: dict, path: Path) -> None:
    """Per-step latency over the run and the time split, as one PNG (needs matplotlib)."""
    fig, (ax1, ax2) = pyplot().subplots(1, 2, figsize=(9, 3), gridspec_kw={"width_ratios": [3, 1]})
    ax1.plot(range(1, len(p["step_ms_all"]) + 1), p["step_ms_all"], lw=1)
    ax1.axhline(p["step_ms"]["p50"], color="k", ls="--", lw=0.8, label=f"p50 {p['step_ms']['p50']:.1f} ms")
    ax1.set_xlabel("sampler step")
    ax1.set_ylabel("ms")
    ax1.set_title(f"{p['variant']} on {p['backend']}/{p['device']}, batch {p['batch']}", fontsize=9)
    ax1.legend(fontsize=8)
    ax2.bar(["sampling", "vocoder"], [p["sampling_s"], p["vocoder_s"]], color=["tab:blue", "tab:orange"])
    ax2.set_ylabel("s")
    ax2.set_title(f"RTF {p['real_time_factor']:.2f}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
