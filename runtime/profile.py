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
from pathlib import Path

import numpy as np

from c2d.runtime.backends import BackendOptions
from c2d.runtime.files import pyplot, save_figure
from c2d.runtime.generate import Generator, default_bundle


def cpu_peak_gmacs(n: int = 2048, repeats: int = 3) -> float:
    """Best-of-`repeats` fp32 matmul throughput of numpy's BLAS on this machine, in GMAC/s (n^3 MACs per matmul)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return n**3 / best / 1e9


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


def profile_bundle(
    bundle: str | Path | None = None,
    backend: str = "ort",
    steps: int | None = None,
    batch: int = 1,
    sampler: str | None = None,
    threads: int | None = None,
    device: str = "cpu",
) -> dict:
    """Every field of the profile for one bundle / backend / batch size."""
    bundle = Path(bundle) if bundle is not None else default_bundle()
    start = time.perf_counter()
    gen = Generator(bundle, backend, BackendOptions(device=device, threads=threads))
    load_s = time.perf_counter() - start
    sampler, steps = gen.sampler_and_steps(sampler, steps)
    digits = [str(i % 10) for i in range(batch)]
    gen.sample(digits, steps=2, sampler=sampler, batch_size=batch)  # warm-up: allocations, first-call costs
    stamps: list[float] = []
    run_start = time.perf_counter()
    result = gen.sample(digits, steps=steps, sampler=sampler, batch_size=batch, on_step=lambda *_: stamps.append(time.perf_counter()))
    step_ms = np.diff([run_start] + stamps) * 1e3
    audio_s = batch * gen.meta.mel.clip_seconds
    total = result.sampling_seconds + result.vocoder_seconds
    macs = gen.meta.macs_per_step * batch
    peak = cpu_peak_gmacs() if device == "cpu" else None
    achieved = macs / (np.median(step_ms) / 1e3) / 1e9
    files = {e.file: e.bytes or (bundle / e.file).stat().st_size for e in (gen.manifest.generator, gen.manifest.vocoder) if e.file}
    return {
        "bundle": str(bundle),
        "variant": gen.meta.variant,
        "precision": gen.meta.precision,
        "backend": backend,
        "device": device,
        "threads": threads or os.cpu_count(),
        "sampler": sampler,
        "steps": steps,
        "batch": batch,
        "vocoder": gen.vocoder.name,
        "step_ms": {"median": float(np.median(step_ms)), "p10": float(np.percentile(step_ms, 10)), "p90": float(np.percentile(step_ms, 90))},
        "step_ms_all": [float(v) for v in step_ms],
        "end_to_end_s": total,
        "sampling_s": result.sampling_seconds,
        "vocoder_s": result.vocoder_seconds,
        "vocoder_share": result.vocoder_seconds / total,
        "real_time_factor": total / audio_s,
        "audio_s": audio_s,
        "load_s": load_s,
        "peak_rss_mb": peak_rss_mb(),
        "file_bytes": files,
        "macs_per_step": macs,
        "achieved_gmacs_per_s": achieved,
        "cpu_peak_gmacs_per_s": peak,
        "fraction_of_peak": achieved / peak if peak else None,
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
    }


def profile_markdown(p: dict) -> str:
    rows = [
        ("bundle", f"{p['bundle']} ({p['variant']}, {p['precision']})"),
        ("backend / device / threads", f"{p['backend']} / {p['device']} / {p['threads']}"),
        ("sampler, steps, batch", f"{p['sampler']}, {p['steps']}, {p['batch']}"),
        ("per-step latency median [p10, p90]", f"{p['step_ms']['median']:.2f} ms [{p['step_ms']['p10']:.2f}, {p['step_ms']['p90']:.2f}]"),
        ("end to end (sampling + vocoder)", f"{p['end_to_end_s']:.3f} s ({p['sampling_s']:.3f} + {p['vocoder_s']:.3f})"),
        (f"vocoder ({p['vocoder']}) share", f"{p['vocoder_share'] * 100:.1f} %"),
        (f"real-time factor ({p['audio_s']:g} s of audio)", f"{p['real_time_factor']:.3f}"),
        ("model load", f"{p['load_s']:.3f} s"),
        ("peak resident memory", f"{p['peak_rss_mb']:.0f} MB"),
        ("files", ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in p["file_bytes"].items())),
        ("MACs per step", f"{p['macs_per_step'] / 1e9:.3f} G"),
        (
            "achieved",
            f"{p['achieved_gmacs_per_s']:.1f} GMAC/s"
            + (
                f" = {p['fraction_of_peak'] * 100:.1f} % of this CPU's fp32 matmul peak ({p['cpu_peak_gmacs_per_s']:.0f} GMAC/s)"
                if p["cpu_peak_gmacs_per_s"]
                else ""
            ),
        ),
    ]
    return "\n".join(["| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]) + "\n"


def plot_profile(p: dict, path: Path) -> None:
    """Per-step latency over the run and the time split, as one PNG (needs matplotlib)."""
    fig, (ax1, ax2) = pyplot().subplots(1, 2, figsize=(9, 3), gridspec_kw={"width_ratios": [3, 1]})
    ax1.plot(range(1, len(p["step_ms_all"]) + 1), p["step_ms_all"], lw=1)
    ax1.axhline(p["step_ms"]["median"], color="k", ls="--", lw=0.8, label=f"median {p['step_ms']['median']:.1f} ms")
    ax1.set_xlabel("sampler step")
    ax1.set_ylabel("ms")
    ax1.set_title(f"{p['variant']} on {p['backend']}/{p['device']}, batch {p['batch']}", fontsize=9)
    ax1.legend(fontsize=8)
    ax2.bar(["sampling", "vocoder"], [p["sampling_s"], p["vocoder_s"]], color=["tab:blue", "tab:orange"])
    ax2.set_ylabel("s")
    ax2.set_title(f"RTF {p['real_time_factor']:.2f}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
