"""Inference backends behind one small protocol (TensorRT demoDiffusion's `Engine` style: each module owns its
engine's whole lifecycle). A backend loads one ONNX file and runs it on numpy arrays:

    backend = open_backend("ort", "bundle/generator.onnx", BackendOptions(threads=2))
    eps, logits = backend.run({"x": x, "t": t, "y": y, "gamma": g}, ["eps", "logits"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from c2d.runtime.errors import C2DError


class BackendOptionsError(C2DError, ValueError):
    """A backend option out of its bounds (the same bounds as the CLI's)."""


class BackendUnavailable(C2DError, RuntimeError):
    """The backend's package, provider or hardware is not present on this machine."""


@dataclass(frozen=True)
class BackendOptions:
    device: str = "cpu"  # "cpu" or "cuda"
    threads: int | None = None  # intra-op threads (CPU); None: the engine's default
    provider: str | None = None  # ORT only: "cpu", "cuda" or "tensorrt" [default: from device]
    fp16: bool = False  # TensorRT: allow fp16 kernels
    int8: bool = False  # TensorRT: allow int8 kernels (QDQ bundles)
    precision: str | None = None  # OpenVINO: inference precision "f32" or "bf16" [default: f32]; int8 comes from QDQ bundles
    max_batch: int = 16  # TensorRT: largest batch of the optimization profile (buffers are sized for it)
    cache_dir: Path | None = None  # TensorRT engines / ORT-TensorRT caches [default: ~/.cache/c2d/engines]
    extra: dict = field(default_factory=dict)  # backend-specific settings, passed through unchanged

    def __post_init__(self):
        from c2d.runtime.limits import REASONS, max_threads

        t = self.threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= max_threads()):
            raise BackendOptionsError(f"threads = {t!r}: {REASONS['threads']} ({max_threads()})")


class Backend(Protocol):
    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """Run once; returns the requested outputs (all by default) in order, as host numpy arrays."""

    def metadata(self) -> dict[str, str]:
        """The ONNX file's metadata_props."""


def onnx_io_shapes(path: str | Path) -> dict[str, list[int | str]]:
    """Input and output shapes of an ONNX file (dims as ints, or their symbolic names such as "batch")."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in list(graph.input) + list(graph.output)}


def _ort(path, options):
    from c2d.runtime.backends.ort import OrtBackend

    return OrtBackend(path, options)


def _trt(path, options):
    from c2d.runtime.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(path, options)


def _openvino(path, options):
    from c2d.runtime.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(path, options)


BACKENDS = {"ort": _ort, "trt": _trt, "openvino": _openvino}


def open_backend(name: str, path: str | Path, options: BackendOptions | None = None) -> Backend:
    """Load one ONNX file; BackendUnavailable if the engine is missing here, BundleError if it cannot load the file
    (truncated, empty, not ONNX, an op it lacks)."""
    from c2d.runtime.bundle import BundleError

    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    try:
        return BACKENDS[name](Path(path), options or BackendOptions())
    except (BackendUnavailable, ImportError):
        raise
    except ValueError as exc:
        if not isinstance(exc, UnicodeError):  # our own option checks; ORT fails to decode some damaged files' messages
            raise
        raise BundleError(f"{path}: {name} cannot load this model; the file is damaged or not a c2d export") from exc
    except Exception as exc:  # each engine has its own exception types for a file it cannot load
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BundleError(f"{path}: {name} cannot load this model ({first_line}); the file is damaged or not a c2d export") from exc
