"""Small ONNX graph edits shared by the quantizer and the backends (onnx only; no torch)."""

from __future__ import annotations

import onnx

WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def unshare_initializers(model: onnx.ModelProto, op_types=WEIGHT_OPS) -> int:
    """Give each quantized operator type its own copy of a weight it shares with another type (a Conv and its
    transposed twin share one, with different channel axes; per-channel QDQ needs one axis per initializer).
    Nodes of one type keep sharing (one int8 copy). OpenVINO 2026.4's CPU plugin also needs it: in f32 it computes a
    ConvTranspose wrongly when the weight is shared with a Conv (tests/test_backends.py keeps the reproducer).
    Returns how many copies were made."""
    inits = {i.name: i for i in model.graph.initializer}
    owner: dict[str, str] = {}  # initializer -> op type that keeps the original
    copies: dict[tuple[str, str], str] = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        for k, name in enumerate(node.input):
            if name not in inits or owner.setdefault(name, node.op_type) == node.op_type:
                continue
            key = (name, node.op_type)
            if key not in copies:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}.{node.op_type.lower()}"
                model.graph.initializer.append(copy)
                copies[key] = copy.name
            node.input[k] = copies[key]
    return len(copies)
