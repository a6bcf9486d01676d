"""Measurement scripts: each writes its numbers under benchmarks/results/ and prints a Markdown table."""

import json
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from c2d.runtime.files import atomic_write_text


def write_results(path: Path, result: dict, markdown: str) -> None:
    """result as JSON at `path` and the table as Markdown beside it (.md), then the table on stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    atomic_write_text(path.with_suffix(".md"), markdown)
    print(markdown)


def cached_samples(cache: Path, generate: Callable[[], tuple[np.ndarray, np.ndarray]], label: str, log) -> tuple[np.ndarray, np.ndarray]:
    """(samples, digits) from the .npz at `cache`, else from generate(), then kept there (written atomically), so an
    interrupted benchmark resumes where it stopped."""
    if cache.is_file():
        data = np.load(cache)
        return data["x"], data["digits"]
    start = time.time()
    x, digits = generate()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez_compressed(tmp, x=x, digits=digits)
    tmp.replace(cache)
    log(f"{label}: {len(x)} samples in {time.time() - start:.0f} s")
    return x, digits


def cpu_model() -> str:
    """The CPU model as lscpu names it (every benchmark result records it)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


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
