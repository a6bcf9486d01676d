"""Bounds on every size-like request, in one place, each with the reason a user reads in the help text and the error.

A request outside them is refused before anything runs: an unbounded step count, sample count or thread count
drove a machine into the OOM killer or hung it. numpy-free, so the CLI reads them without importing the runtime.
"""

from __future__ import annotations

import math
import numbers
import os

MAX_STEPS = 1000  # sampler steps: 10x the paper's 100-step EM; quality stops improving long before
MAX_SAMPLES = 1000  # samples in one run (digits x count): every waveform is held in memory until all are written
MAX_LOG_MEL_SAMPLES = 20_000  # samples of a run that stops at the log-Mel (evaluation, calibration): 28 KB each
MAX_BATCH = 256  # samples per graph call: the guided graph keeps two backward passes' activations per sample
MAX_GUIDANCE = 100.0  # guidance scale: the paper uses single digits; far beyond, every step saturates
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 192000  # Hz of a resampled WAV: the model's audio has nothing above 4 kHz
MIN_PEAK_DBFS = -60.0  # quieter than this is silence on any playback chain
MAX_SEED = 2**32 - 1  # numpy seeds; sample k uses seed + k, so seed + samples must stay below it too
MAX_VOCODE_FRAMES = 20_000  # frames of one mel handed to `c2d vocode` (about 4 min of audio at hop 256 / 22 kHz)
MAX_CALIBRATION_SEEDS = 25  # samples per digit and guidance scale: one graph call runs all of them (at most MAX_BATCH)
MAX_EVAL_COUNT = MAX_LOG_MEL_SAMPLES // 10  # samples per digit of `c2d evaluate`
MAX_GATE_COUNT = MAX_BATCH // 10  # samples per digit of a quantization gate: one graph call per step runs them all
MAX_TRAIN_STEPS, MAX_TRAIN_BATCH = 10_000_000, 4096
# The one bound on a run's first seed, in every command and in the Python API: the largest run makes
# MAX_LOG_MEL_SAMPLES samples, and its last seed must still be a numpy seed.
MAX_SEED_START = MAX_SEED - MAX_LOG_MEL_SAMPLES


def max_threads() -> int:
    """More threads than cores only slows the engines down (and thousands of them hang the process)."""
    return os.cpu_count() or 1


REASONS = {
    "steps": f"at most {MAX_STEPS} (10x the paper's 100-step sampler; a step costs one graph call)",
    "samples": f"at most {MAX_SAMPLES} samples per run (all waveforms are held in memory until written)",
    "batch": f"at most {MAX_BATCH} samples per graph call (activations of two backward passes per sample)",
    "guidance": f"0 to {MAX_GUIDANCE:g} (the paper's scales are single digits)",
    "sample_rate": f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
    "peak_dbfs": f"{MIN_PEAK_DBFS:g} to 0 dBFS",
    "seed": f"0 to {MAX_SEED_START} (sample k uses seed + k, a numpy seed up to {MAX_SEED})",
    "threads": "1 to the number of cores here (more only slows the engines down)",
}


def check_int(name: str, value, low: int, high: int, reason: str | None = None) -> int:
    """value as an int in [low, high]; ValueError naming the option and the bound otherwise (bools are not ints)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be {reason or f'{low} to {high}'}, got {value}")
    return int(value)


def check_float(name: str, value, low: float, high: float, reason: str | None = None) -> float:
    """value as a finite float in [low, high]; ValueError otherwise (NaN and infinities included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be {reason or f'{low:g} to {high:g}'}, got {value}")
    return value
