"""Where a graph's time goes, by the engines' own profilers: ONNX Runtime's profiling output (per kernel) and
OpenVINO's performance counters (per node type). Used by `c2d profile --per-op` and the benchmarks."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np


def ort_kernel_times(path: Path, feeds: list[dict[str, np.ndarray]], threads: int) -> list[tuple[str, str, float]]:
    """(operator type, node name, kernel ms per call) of every kernel ORT's profiler timed over the feeds, on CPU."""
    import onnxruntime as ort

    from c2d.runtime.backends import BackendOptions
    from c2d.runtime.backends.ort import session_options

    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(BackendOptions(threads=threads))
        so.enable_profiling, so.profile_file_prefix = True, str(Path(tmp) / "p")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for f in feeds:
            session.run(["eps"], f)
        events = json.loads(Path(session.end_profiling()).read_text())
    return [
        (e["args"]["op_name"], e["name"].removesuffix("_kernel_time"), e["dur"] / 1e3 / len(feeds))
        for e in events
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
    ]


def openvino_kernel_times(path: Path, feeds: list[dict[str, np.ndarray]], threads: int, precision: str) -> dict[str, float]:
    """Milliseconds per step by OpenVINO node type (Convolution, Reorder, Subgraph, ...) from OpenVINO's own performance
    counters, on CPU at the given inference precision; the graph as the backend compiles it (shared weights unshared)."""
    import openvino as ov

    from c2d.runtime.backends.openvino import patched_model

    core = ov.Core()
    model = core.read_model(patched_model(Path(path)).SerializeToString(), b"")
    model.reshape({name: list(value.shape) for name, value in feeds[0].items()})
    compiled = core.compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True}
    )
    request = compiled.create_infer_request()
    request.infer(feeds[0])  # first call: one-time work
    per_type: dict[str, float] = {}
    for feed in feeds:
        request.infer(feed)
        for info in request.profiling_info:
            per_type[info.node_type] = per_type.get(info.node_type, 0.0) + info.real_time.total_seconds() * 1e3 / len(feeds)
    return dict(sorted(per_type.items(), key=lambda kv: -kv[1]))
