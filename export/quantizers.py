"""The ONNX Runtime quantization tools, driven for c2d graphs: static int8 from a recording of real sampler runs,
dynamic int8, fp16."""

from __future__ import annotations

from pathlib import Path

import onnx

from c2d.calibration.record import Recording
from c2d.export.onnx_passes import QUANTIZED_OPS, sort_nodes

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


CALIBRATION_CHUNK = 16  # recorded calls per MinMax calibration pass


HISTOGRAM_ROWS = 4  # rows per pass of the histogram calibrators (entropy, percentile), which keep every activation


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]


def quantize_int8_static(
    model: Path, out: Path, recording: Recording | None, method: str, cache: Path, exclude: list[str], only: list[str] | None = None
) -> None:
    """QDQ int8; calibration runs once per (model, method) and is cached in `cache`, so a sweep re-quantizes cheaply."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from c2d.calibration.reader import RecordingReader

    # MinMax keeps two numbers per tensor and call; the histogram methods keep whole activations: small passes
    reader = None if recording is None else RecordingReader(recording, None if method == "minmax" else HISTOGRAM_ROWS)
    stride = 1 if reader is None else calibration_stride(len(reader), CALIBRATION_CHUNK if method == "minmax" else 1)
    quantize_static(
        str(model),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=only,
        nodes_to_exclude=exclude,
        calibrate_method=_calibration_method(method),
        calibration_cache_path=str(cache),
        extra_options={"CalibStridedMinMax": stride, "CalibPercentile": 99.99},
    )


def calibration_stride(calls: int, most: int = CALIBRATION_CHUNK) -> int:
    """Reader items per calibration pass: the largest divisor of `calls` up to `most` (ORT requires a divisor).

    ORT merges the ranges of successive passes. Not CalibMaxIntermediateOutputs: ORT 1.32's MinMax calibrator
    discards the outputs it has collected each time that many accumulate, without taking their ranges, so only the
    last (calls mod that many) calls were calibrated (and none when it divides the count: "No data is collected").
    """
    return max(d for d in range(1, min(calls, most) + 1) if calls % d == 0)


def quantize_int8_dynamic(model: Path, out: Path, exclude: list[str], op_types=("Conv", "MatMul")) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(model), str(out), op_types_to_quantize=list(op_types), per_channel=False, weight_type=QuantType.QInt8, nodes_to_exclude=exclude
    )


def convert_fp16(model: Path, out: Path, exclude: list[str]) -> None:
    """float16 inside, float32 at the inputs and outputs; the float-only arithmetic stays float32, and so does
    LayerNormalization: its InvStdDev output (the adjoint's rstd) is float32 whatever its input (stash_type), which
    the converter does not know. The converter appends the Casts it inserts, so the nodes are sorted again."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(
        onnx.load(str(model)), keep_io_types=True, node_block_list=exclude, op_block_list=DEFAULT_OP_BLOCK_LIST + ["LayerNormalization"]
    )
    sort_nodes(converted.graph)
    onnx.save(converted, str(out))
