"""Griffin-Lim with BLAS's default thread count against one BLAS thread, on a quiet and on a loaded CPU.

python -m c2d.benchmarks.vocoder_threads [--rounds 7] [--load-procs N] [--results benchmarks/results/vocoder_threads.json]

A device rarely runs only our generator. Griffin-Lim's matrix products are small (80 x 513 by 513 x 87), so extra
BLAS threads buy nothing, while OpenBLAS threads spin waiting for work and fight any other busy process for the
cores. Each condition times both settings interleaved (same machine state), batch 1, 1 s of audio. Loads: N
processes busy-looping in pure Python (default: one per core), and one process multiplying matrices with BLAS on
every core (like a training job or another model beside ours).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time

import numpy as np

from c2d.benchmarks import harness
from c2d.benchmarks.harness import write_results
from c2d.runtime.audio import DEFAULT_MEL, log_mel
from c2d.runtime.vocoder import GriffinLim

SETTINGS = {"BLAS default threads": GriffinLim(blas_threads=None), "1 BLAS thread (c2d default)": GriffinLim()}


def spin() -> None:
    while True:
        pass


def blas_spin() -> None:
    a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
    while True:
        a = np.tanh(a @ a)


def chirp_log_mel() -> np.ndarray:
    """A 1 s two-tone chirp's natural-log Mel [1, 80, T]: the vocoder's cost does not depend on the content."""
    t = np.arange(DEFAULT_MEL.clip_samples) / DEFAULT_MEL.sample_rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.1 * np.sin(2 * np.pi * 1200 * t)
    return log_mel(wave.astype(np.float32), DEFAULT_MEL)[None]


def interleaved_seconds(mel: np.ndarray, rounds: int) -> dict[str, list[float]]:
    for vocoder in SETTINGS.values():  # warm-up
        vocoder(mel)
    times = {name: [] for name in SETTINGS}
    for _ in range(rounds):
        for name, vocoder in SETTINGS.items():
            start = time.perf_counter()
            vocoder(mel)
            times[name].append(time.perf_counter() - start)
    return times


def measure(mel: np.ndarray, rounds: int, load_procs: int, target=spin) -> dict[str, list[float]]:
    procs = [mp.Process(target=target, daemon=True) for _ in range(load_procs)]
    for p in procs:
        p.start()
    try:
        return interleaved_seconds(mel, rounds)
    finally:
        for p in procs:
            p.terminate()
            p.join()


def main() -> None:
    ap = harness.parser(__doc__, "vocoder_threads", rounds=7)
    ap.add_argument("--load-procs", type=int, default=os.cpu_count())
    args = ap.parse_args()
    mel = chirp_log_mel()
    conditions = {
        "quiet": (0, spin),
        f"loaded: {args.load_procs} busy Python processes": (args.load_procs, spin),
        "loaded: 1 process multiplying matrices on every core": (1, blas_spin),
    }
    runs = {label: measure(mel, args.rounds, n, target) for label, (n, target) in conditions.items()}
    medians = {label: {name: statistics.median(v) for name, v in times.items()} for label, times in runs.items()}
    default, one = SETTINGS
    lines = [
        f"Griffin-Lim, batch 1, 1 s of audio, {os.cpu_count()} cores, median of {args.rounds} interleaved rounds",
        "",
        f"| CPU | {default} s | {one} s | default / one thread |",
        "|---|---|---|---|",
    ]
    for label, m in medians.items():
        lines.append(f"| {label} | {m[default]:.3f} | {m[one]:.3f} | {m[default] / m[one]:.1f} |")
    result = {
        "command": "python -m c2d.benchmarks.vocoder_threads",
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "rounds_s": {label: {name: [round(x, 4) for x in v] for name, v in t.items()} for label, t in runs.items()},
        "median_s": medians,
    }
    write_results(args.results, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
