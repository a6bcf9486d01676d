"""This CPU's practical GEMM rates per engine and precision: the peaks that a generator step's GMAC/s is read against.

python -m c2d.benchmarks.peaks [--threads 1 2] [--n 1024]

One n x n x n product with a constant weight (as a layer has), batch of n rows, timed on each engine: ORT fp32,
OpenVINO f32 and bf16 (its inference precision hint), and int8 as a QDQ graph (activations uint8, weights int8
per tensor; ORT fuses it into an integer MatMul, OpenVINO runs it as an int8 FullyConnected). The best of `calls`
timed runs, in GMAC/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from c2d.benchmarks.harness import cpu_model
from c2d.runtime.backends import BackendOptions, BackendUnavailable, open_backend

# label: (backend, OpenVINO precision, int8 QDQ graph)
GEMMS = {
    "ORT fp32": ("ort", None, False),
    "OpenVINO f32": ("openvino", "f32", False),
    "OpenVINO bf16": ("openvino", "bf16", False),
    "ORT int8": ("ort", None, True),
    "OpenVINO int8": ("openvino", "f32", True),
}


def gemm_model(n: int, int8: bool) -> onnx.ModelProto:
    """y [n, n] = a [n, n] @ W [n, n]: W a float initializer, or int8 with QDQ on both operands."""
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


def gemm_peaks(threads: int, n: int = 1024, calls: int = 20, engines: dict = GEMMS) -> dict[str, float]:
    """label -> GMAC/s with this many threads; engines that are not installed are left out."""
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (backend, precision, int8) in engines.items():
            path = Path(tmp) / f"gemm-{'int8' if int8 else 'float'}.onnx"
            if not path.is_file():
                onnx.save(gemm_model(n, int8), str(path))
            try:
                opened = open_backend(backend, path, BackendOptions(threads=threads, precision=precision, cache_dir=Path(tmp)))
            except BackendUnavailable as exc:
                print(f"{label}: skipped ({exc})")
                continue
            peaks[label] = gemm_gmacs(opened, n, calls)
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n", type=int, default=1024)
    args = ap.parse_args()
    print(f"GEMM {args.n}^3, GMAC/s; {cpu_model()}")
    for threads in args.threads:
        peaks = gemm_peaks(threads, args.n)
        print(f"{threads} thread(s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))


if __name__ == "__main__":
    main()
