"""Native TensorRT backend (tensorrt >= 10 Python API, cuda-python for memory): build an engine from the bundle's
ONNX with one optimization profile, cache it on disk keyed by everything that makes an engine non-portable,
preallocate device buffers for the largest shapes, and run with execute_async_v3.

NOT YET VERIFIED ON HARDWARE: the lent GPU machine has neither TensorRT nor onnxruntime-gpu (DESIGN.md). The
parts that need no GPU (cache keys, profile shapes, buffer plans) are unit-tested in tests/test_runtime.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2d.runtime.backends import BackendOptions, BackendUnavailable, onnx_io_shapes
from c2d.runtime.bundle import file_sha256
from c2d.runtime.files import atomic_write_bytes

DEFAULT_DIM_BOUNDS = {"frames": (1, 88, 512)}  # (min, opt, max) of named dynamic dims other than the batch


@dataclass(frozen=True)
class Profile:
    """min / opt / max shape of every input: one TensorRT optimization profile."""

    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

    def max_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: s[2] for name, s in self.shapes.items()}


def make_profile(
    io_shapes: dict[str, list], inputs: Sequence[str], max_batch: int, opt_batch: int = 1, dim_bounds: dict[str, tuple[int, int, int]] | None = None
) -> Profile:
    """Profile from the ONNX input shapes: "batch" spans 1..max_batch; other named dims take their bounds."""
    bounds = {"batch": (1, min(opt_batch, max_batch), max_batch), **DEFAULT_DIM_BOUNDS, **(dim_bounds or {})}
    shapes = {}
    for name in inputs:
        lo, opt, hi = [], [], []
        for dim in io_shapes[name]:
            if isinstance(dim, str):
                if dim not in bounds:
                    raise ValueError(f"input {name} has a dynamic dim {dim!r} without bounds; pass dim_bounds")
                b = bounds[dim]
            else:
                b = (dim, dim, dim)
            lo.append(b[0])
            opt.append(b[1])
            hi.append(b[2])
        shapes[name] = (tuple(lo), tuple(opt), tuple(hi))
    return Profile(shapes)


def engine_cache_key(onnx_sha256: str, gpu_name: str, compute_capability: str, trt_version: str, fp16: bool, int8: bool, profile: Profile) -> str:
    """An engine only runs on the GPU model and TensorRT version that built it, with its flags and profile."""
    parts = {
        "onnx": onnx_sha256,
        "gpu": gpu_name,
        "sm": compute_capability,
        "trt": trt_version,
        "fp16": fp16,
        "int8": int8,
        "profile": {k: [list(s) for s in v] for k, v in sorted(profile.shapes.items())},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def buffer_plan(shapes: dict[str, tuple[int, ...]], itemsize: dict[str, int]) -> dict[str, int]:
    """Bytes to preallocate per tensor for its largest shape."""
    return {name: int(np.prod(shape)) * itemsize.get(name, 4) for name, shape in shapes.items()}


def _import_gpu_stack():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable("the TensorRT backend needs the tensorrt package and an NVIDIA GPU: pip install 'c2d[trt]'") from exc
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise BackendUnavailable("the TensorRT backend needs cuda-python for device memory: pip install 'c2d[trt]'") from exc
    return trt, cudart


def _check(result):
    """cuda-python calls return (err, *values)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


class TensorRTBackend:
    name = "trt"

    def __init__(self, path: Path, options: BackendOptions):
        trt, cudart = _import_gpu_stack()
        self.trt, self.cudart = trt, cudart
        self.path = Path(path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        io = onnx_io_shapes(path)
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        self._metadata = {p.key: p.value for p in model.metadata_props}
        self.input_names = tuple(i.name for i in model.graph.input)
        self.output_names = tuple(o.name for o in model.graph.output)
        self.profile = make_profile(io, self.input_names, options.max_batch, int(options.extra.get("opt_batch", 1)), options.extra.get("dim_bounds"))
        props = _check(cudart.cudaGetDeviceProperties(int(options.extra.get("device_id", 0))))
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        key = engine_cache_key(file_sha256(path), gpu, f"{props.major}.{props.minor}", trt.__version__, options.fp16, options.int8, self.profile)
        cache_dir = Path(options.cache_dir or Path.home() / ".cache" / "c2d" / "engines")
        self.engine_path = cache_dir / f"{self.path.stem}-{key}.plan"
        engine_bytes = self.engine_path.read_bytes() if self.engine_path.is_file() else self._build(options, cache_dir)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self._allocate()

    def _build(self, options: BackendOptions, cache_dir: Path) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(self.path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {self.path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.extra.get("workspace_bytes", 1 << 30)))
        if options.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if options.int8:
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in self.profile.shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine for {self.path}")
        data = bytes(serialized)
        atomic_write_bytes(self.engine_path, data)
        return data

    def _allocate(self) -> None:
        """Device buffers for the largest shapes: inputs from the profile, outputs as TensorRT infers them."""
        for name, shape in self.profile.max_shapes().items():
            self.context.set_input_shape(name, shape)
        shapes = {**self.profile.max_shapes(), **{n: tuple(self.context.get_tensor_shape(n)) for n in self.output_names}}
        self.dtypes = {n: np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(n))) for n in shapes}
        plan = buffer_plan(shapes, {n: d.itemsize for n, d in self.dtypes.items()})
        self.buffers = {name: _check(self.cudart.cudaMalloc(nbytes)) for name, nbytes in plan.items()}
        for name, ptr in self.buffers.items():
            self.context.set_tensor_address(name, int(ptr))

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        cudart, h2d, d2h = self.cudart, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = {}
        for name in self.input_names:
            host = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            hosts[name] = host
            self.context.set_input_shape(name, host.shape)
            _check(cudart.cudaMemcpyAsync(self.buffers[name], host.ctypes.data, host.nbytes, h2d, self.stream))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        results = []
        for name in outputs or self.output_names:
            out = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name])
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, self.buffers[name], out.nbytes, d2h, self.stream))
            results.append(out)
        _check(cudart.cudaStreamSynchronize(self.stream))
        return results

    def __del__(self):
        for ptr in getattr(self, "buffers", {}).values():
            self.cudart.cudaFree(ptr)
