"""The mixed mode's search: rank the graph's blocks by the error each adds when quantized alone, then keep in float
the fewest of the worst with which the rest meets the step-error target."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from c2d.calibration.record import Recording
from c2d.export.onnx_passes import quantizable_blocks
from c2d.export.quantizers import quantize_int8_static
from c2d.runtime.backends import BackendOptions
from c2d.runtime.backends.ort import session_options
from c2d.runtime.gate import reference_eps, replay_errors

SWEEP_CALLS = 8  # recorded calls (spread over the trajectory) that score each block in the sensitivity sweep


def cpu_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(BackendOptions(threads=threads)), providers=["CPUExecutionProvider"])


def session_eps(session: ort.InferenceSession) -> Callable[[dict], np.ndarray]:
    return lambda feeds: session.run(["eps"], feeds)[0]


def sweep_calls(recording: Recording, n: int = SWEEP_CALLS) -> list[dict[str, np.ndarray]]:
    """n recorded calls spread evenly over the recording (so over the noise levels)."""
    return [recording.call(int(i)) for i in np.linspace(0, recording.calls - 1, min(n, recording.calls)).astype(int)]


def sensitivity_sweep(
    model: onnx.ModelProto,
    prepared: Path,
    fp32_path: Path,
    recording: Recording,
    method: str,
    cache: Path,
    exclude: list[str],
    work: Path,
    log: Callable[[str], None],
) -> dict[str, float]:
    """Error against fp32 when only one block is quantized, for every block (worst first)."""
    calls = sweep_calls(recording)
    ref = reference_eps(session_eps(cpu_session(fp32_path)), calls)
    scores = {}
    blocks = quantizable_blocks(model, set(exclude))
    for k, (block, nodes) in enumerate(blocks.items()):
        path = work / f"sweep-{k}.onnx"
        quantize_int8_static(prepared, path, recording, method, cache, exclude, only=nodes)
        scores[block] = float(np.max(replay_errors(ref, session_eps(cpu_session(path)), calls)))
        path.unlink()
        log(f"  sweep {k + 1}/{len(blocks)} {block}: error {scores[block]:.4f}")
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))


def choose_float_blocks(
    model, prepared, fp32_path, recording, method, cache, exclude, scores: dict[str, float], target: float, work: Path, log
) -> tuple[list[str], float]:
    """The fewest of the worst blocks kept float with which the rest, in int8, meets `target` (fewest_float_blocks)."""
    blocks = quantizable_blocks(model, set(exclude))
    ranked = list(scores)
    calls = sweep_calls(recording)
    ref = reference_eps(session_eps(cpu_session(fp32_path)), calls)

    def error_with_float(n: int) -> float:
        extra = [name for b in ranked[:n] for name in blocks[b]]
        path = work / "mixed-trial.onnx"
        quantize_int8_static(prepared, path, recording, method, cache, exclude + extra)
        error = float(np.max(replay_errors(ref, session_eps(cpu_session(path)), calls)))
        log(f"  {n} block(s) float: error {error:.4f}")
        return error

    n, error = fewest_float_blocks(error_with_float, len(ranked), target)
    return ranked[:n], error


def fewest_float_blocks(error_with_float: Callable[[int], float], total: int, target: float) -> tuple[int, float]:
    """(n, its error): the smallest n of the ranked blocks to keep float so that error_with_float(n) <= target, or
    (total, its error) if none meets it. Doubling 0, 1, 2, 4, ... brackets it, then bisection between the last n
    that missed and the first that met the target (the error falls roughly monotonically as blocks stay float;
    doubling alone can keep up to twice the blocks needed)."""
    missed, n = -1, 0  # every n below is measured once: doubling's n are distinct, bisection's lie strictly between
    error = error_with_float(n)
    while error > target:
        if n >= total:
            return total, error
        missed, n = n, 1 if n == 0 else min(2 * n, total)
        error = error_with_float(n)
    met, met_error = n, error
    while met - missed > 1:
        middle = (missed + met) // 2
        error = error_with_float(middle)
        if error <= target:
            met, met_error = middle, error
        else:
            missed = middle
    return met, met_error
