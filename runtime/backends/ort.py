"""ONNX Runtime backend: CPU provider with thread settings; CUDA and TensorRT providers (onnxruntime-gpu) with
I/O binding so outputs are fetched once per call without extra staging copies."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from c2d.runtime.backends import BackendOptions, BackendUnavailable

PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "c2d" / "engines"


def provider_list(options: BackendOptions) -> list:
    """ORT providers (with their options) in priority order for the requested provider; CPU is always last."""
    provider = options.provider or ("cuda" if options.device == "cuda" else "cpu")
    if provider not in PROVIDER_NAMES:
        raise ValueError(f"unknown ONNX Runtime provider {provider!r}; choose one of {sorted(PROVIDER_NAMES)}")
    device_id = int(options.extra.get("device_id", 0))
    chain: list = []
    if provider == "tensorrt":
        cache = str(options.cache_dir or default_cache_dir())
        chain.append(
            (
                "TensorrtExecutionProvider",
                {
                    "device_id": device_id,
                    "trt_fp16_enable": options.fp16,
                    "trt_int8_enable": options.int8,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": cache,
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": cache,
                },
            )
        )
    if provider in ("cuda", "tensorrt"):
        chain.append(("CUDAExecutionProvider", {"device_id": device_id}))
    chain.append("CPUExecutionProvider")
    return chain


def check_available(chain: list, available: Sequence[str]) -> None:
    """The first (requested) provider must exist in this onnxruntime build."""
    wanted = chain[0][0] if isinstance(chain[0], tuple) else chain[0]
    if wanted not in available:
        raise BackendUnavailable(
            f"{wanted} is not in this onnxruntime build (available: {', '.join(available)}); "
            "GPU providers need onnxruntime-gpu (pip install 'c2d[gpu]') and an NVIDIA GPU"
        )


def session_options(options: BackendOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if options.threads:
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
    return so


def quiet_session(path: Path, so: ort.SessionOptions, chain: list) -> ort.InferenceSession:
    """An InferenceSession without ORT's own prints on stdout ("EP Error ... Falling back ... retrying") when a file
    does not load: the caller reports that in one line. Anything printed by a session that did load goes to stderr."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        session = ort.InferenceSession(str(path), so, providers=chain)
    if captured.getvalue().strip():
        print(captured.getvalue().rstrip(), file=sys.stderr)
    return session


class OrtBackend:
    name = "ort"

    def __init__(self, path: Path, options: BackendOptions):
        chain = provider_list(options)
        check_available(chain, ort.get_available_providers())
        self.session = quiet_session(path, session_options(options), chain)
        self.on_gpu = self.session.get_providers()[0] != "CPUExecutionProvider"
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        names = list(outputs or self.output_names)
        if not self.on_gpu:
            return self.session.run(names, feeds)
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
