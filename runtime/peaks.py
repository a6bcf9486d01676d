"""This CPU's practical GEMM rate per engine and precision: the peak that a generator step's GMAC/s is read against.

One n x n x n product with a constant weight (as a layer has), batch of n rows, timed on each engine: ORT fp32,
OpenVINO f32 and bf16 (its inference precision hint), and int8 as a QDQ graph (activations uint8, weights int8 per
tensor; ORT fuses it into an integer MatMul, OpenVINO runs it as an int8 FullyConnected). The best of `calls` timed
runs, in GMAC/s. `python -m c2d.benchmarks.peaks` prints the table for several thread counts.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from c2d.runtime.backends import BackendOptions, BackendUnavailable, open_backend

# label: (backend, OpenVINO precision, int8 QDQ graph)
GEMMS = {
    "ORT fp32": ("ort", None, False),
    "OpenVINO f32": ("openvino", "f32", False),
    "OpenVINO bf16": ("openvino", "bf16", False),
    "ORT int8": ("ort", None, True),
    "OpenVINO int8": ("openvino", "f32", True),
}
PROFILE_N = 1024


def gemm_model(n: int, int8: bool):
    """y [n, n] = a [n, n] @ W [n, n]: W a float initializer, or int8 with QDQ on both operands."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])]
    if not int8:
        nodes = [helper.make_node("MatMul", ["a", "w"], ["y"])]
        inits = [numpy_helper.from_array(weight, "w")]
    else:
        w_scale = np.float32(np.abs(weight).max() / 127)
        inits = [
            numpy_helper.from_array(np.round(weight / w_scale).astype(np.int8), "w_q"),
            numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
            numpy_helper.from_array(np.array(8 / 255, np.float32), "a_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["a", "a_scale", "a_zero"], ["a_q"]),
            helper.make_node("DequantizeLinear", ["a_q", "a_scale", "a_zero"], ["a_dq"]),
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"]),
            helper.make_node("MatMul", ["a_dq", "w_dq"], ["y"]),
        ]
    graph = helper.make_graph(nodes, "gemm", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def gemm_gmacs(backend, n: int, calls: int) -> float:
    a = {"a": np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)}
    backend.run(a)
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        backend.run(a)
        best = min(best, time.perf_counter() - start)
    return n**3 / best / 1e9


def gemm_peaks(threads: int | None, n: int = PROFILE_N, calls: int = 20, engines: dict = GEMMS, log=print) -> dict[str, float]:
    """label -> GMAC/s with this many threads; engines that are not installed are left out."""
    import onnx

    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (backend, precision, int8) in engines.items():
            path = Path(tmp) / f"gemm-{'int8' if int8 else 'float'}.onnx"
            if not path.is_file():
                onnx.save(gemm_model(n, int8), str(path))
            try:
                opened = open_backend(backend, path, BackendOptions(threads=threads, precision=precision, cache_dir=Path(tmp)))
            except (BackendUnavailable, ImportError) as exc:
                log(f"{label}: skipped ({exc})")
                continue
            peaks[label] = gemm_gmacs(opened, n, calls)
    return peaks


def gemm_label(backend: str, bundle_precision: str, backend_precision: str | None) -> str:
    """The GEMM that matches a run's arithmetic: int8 for int8 and mixed bundles, bf16 where OpenVINO runs bf16,
    else fp32 (ONNX Runtime's CPU kernels run an fp16 bundle's convolutions in fp32 too)."""
    engine = "ORT" if backend == "ort" else "OpenVINO"
    if bundle_precision.startswith("int8") or bundle_precision == "mixed":
        return f"{engine} int8"
    if backend == "openvino":
        return "OpenVINO bf16" if backend_precision == "bf16" else "OpenVINO f32"
    return "ORT fp32"


def engine_peak(backend: str, bundle_precision: str, backend_precision: str | None, threads: int | None, calls: int = 10) -> tuple[str, float] | None:
    """(label, GMAC/s) of the GEMM matching a run's engine, precision and threads; None if that engine is missing."""
    label = gemm_label(backend, bundle_precision, backend_precision)
    peaks = gemm_peaks(threads, calls=calls, engines={label: GEMMS[label]}, log=lambda _: None)
    return (label, peaks[label]) if label in peaks else None
