"""Timing several backends side by side: every round visits every backend once, so a noisy, shared machine slows
them alike and their ratio holds. Used by the deployment choice and by every benchmark (benchmarks/harness.py)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence

import numpy as np

from c2d.runtime.backends import Backend


def interleaved_rounds(
    backends: Mapping[str, Backend], feeds: Sequence[dict[str, np.ndarray]], rounds: int, calls: int, warmup: int = 1, output: str = "eps"
) -> dict[str, list[float]]:
    """Per-round median ms per call of every backend; each round visits every backend once (same machine state)."""
    for b in backends.values():
        for k in range(warmup):
            b.run(feeds[k % len(feeds)], [output])
    times: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, b in backends.items():
            per_call = []
            for k in range(calls):
                start = time.perf_counter()
                b.run(feeds[k % len(feeds)], [output])
                per_call.append(time.perf_counter() - start)
            times[name].append(statistics.median(per_call) * 1e3)
    return times


def interleaved_latency(backends: Mapping[str, Backend], feeds: Sequence[dict[str, np.ndarray]], rounds: int, calls: int) -> dict[str, float]:
    """Median over rounds of interleaved_rounds: one ms figure per backend."""
    return {name: statistics.median(v) for name, v in interleaved_rounds(backends, feeds, rounds, calls).items()}
