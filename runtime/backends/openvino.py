"""OpenVINO backend (the `openvino` package, extra `openvino`): reads the bundle's ONNX as it is, compiles it for
the CPU in f32 or bf16 (AMX where the CPU has it); QDQ int8 bundles run as int8. The graph is compiled for the exact
input shapes of each call (one compiled model per distinct shape set, usually one or two per sampling run): static
shapes were faster than a dynamic batch dimension in a throw-away check. Compiled models are
cached on disk (OpenVINO's CACHE_DIR), so later loads skip compilation.

Before compiling, a weight shared by a Conv and a ConvTranspose (the classifier's strided adjoint) is given its own
copy: OpenVINO 2026.4's CPU plugin computes such a ConvTranspose wrongly in f32 (relative error about 1; the
minimal reproducer is in tests/test_backends.py, marked as a known upstream fault).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from c2d.runtime.backends import BackendOptions, BackendUnavailable

PRECISIONS = ("f32", "bf16")


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "c2d" / "openvino"


def writable_folder(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


@contextlib.contextmanager
def cache_lock(cache_dir: Path):
    """Hold an exclusive lock on OpenVINO's model cache while compiling: two processes that compiled the same model at
    once crashed here (SIGBUS reading a blob the other was rewriting; "cannot set permissions ... .blob"). Without
    fcntl (Windows) or a writable cache folder, compile unlocked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle = open(cache_dir / ".c2d-compile.lock", "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compile_config(options: BackendOptions) -> dict:
    precision = options.precision or "f32"
    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision must be one of {PRECISIONS}, got {precision!r}")
    if options.device != "cpu":
        raise BackendUnavailable(f"the OpenVINO backend runs on the CPU here; device {options.device!r} is not supported")
    config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = options.threads
    return config


def patched_model(path: Path):
    """The ONNX model with shared Conv/ConvTranspose weights unshared."""
    import onnx

    from c2d.runtime.onnx_edit import unshare_initializers

    model = onnx.load(str(path))
    unshare_initializers(model, ("Conv", "ConvTranspose"))
    return model


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, path: Path, options: BackendOptions):
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable("the OpenVINO backend needs the openvino package: pip install 'c2d[openvino]'") from exc
        config = compile_config(options)
        core = ov.Core()
        cache = Path(options.cache_dir or default_cache_dir())
        if writable_folder(cache):  # a read-only home only costs the compile cache, not the run
            core.set_property({"CACHE_DIR": str(cache)})
        model = patched_model(path)
        self._metadata = {p.key: p.value for p in model.metadata_props}
        self._core, self._config, self._onnx = core, config, model.SerializeToString()
        self.precision = config["INFERENCE_PRECISION_HINT"]
        # OpenVINO may give a port several names; the ONNX graph's are the ones the runtime uses
        self.input_names = tuple(i.name for i in model.graph.input)
        self.output_names = tuple(o.name for o in model.graph.output)
        self._compiled: dict[tuple, tuple] = {}  # input shapes -> (infer request, output ports)
        self._cache_dir = Path(options.cache_dir or default_cache_dir())
        # one infer request per shape: calls from several threads take turns (OpenVINO raises "Infer Request is
        # busy" otherwise); ONNX Runtime's sessions are thread-safe by themselves
        self._lock = threading.Lock()

    def _request_for(self, feeds: dict[str, np.ndarray]):
        key = tuple((name, feeds[name].shape) for name in self.input_names)
        if key not in self._compiled:
            model = self._core.read_model(self._onnx, b"")
            model.reshape({name: list(shape) for name, shape in key})
            with cache_lock(self._cache_dir):  # other processes may be writing the same cached blob
                compiled = self._core.compile_model(model, "CPU", self._config)
            self._compiled[key] = (compiled.create_infer_request(), {name: compiled.output(name) for name in self.output_names})
        return self._compiled[key]

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        with self._lock:
            request, ports = self._request_for(feeds)
            result = request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
            return [np.array(result[ports[name]], copy=True) for name in (outputs or self.output_names)]
