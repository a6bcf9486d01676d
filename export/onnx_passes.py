"""ONNX graph passes for quantization: node naming, the nodes that must stay float, constant folding, the blocks a
sensitivity sweep quantizes one at a time, topological sorting."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import onnx

from c2d.runtime.errors import C2DError
from c2d.runtime.onnx_edit import unshare_initializers

QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


class QuantizationError(C2DError, RuntimeError):
    """The request cannot be met: bad mode or inputs, or the quantized model failed its quality gate."""


def name_nodes(model: onnx.ModelProto) -> None:
    """ORT's quantizer selects and excludes nodes by name: give every node one."""
    seen = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def float_only_nodes(model: onnx.ModelProto, data_input: str = "x") -> list[str]:
    """Nodes that do not depend on the data input: noise-level, time-embedding and guidance-scale arithmetic."""
    tainted = {data_input}
    keep = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if any(i in tainted for i in node.input):
            tainted.update(node.output)
        else:
            keep.append(node.name)
    return keep


def compact(path: Path) -> None:
    """Drop the inferred shapes and doc strings the quantizers leave behind (ORT infers them again on load)."""
    model = onnx.load(str(path))
    del model.graph.value_info[:]
    for node in model.graph.node:
        node.doc_string = ""
    onnx.save(model, str(path))


def prepare(src: Path, dst: Path) -> onnx.ModelProto:
    """ORT's pre-processing (constant folding: the adjoint's flipped weights become initializers, so they quantize too;
    its symbolic shape inference cannot read our dynamic-batch Reshapes, ONNX's shape inference runs instead), then
    named nodes, unshared weights, inferred shapes; written to dst (ORT's quantizers read files)."""
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    model = onnx.load(str(dst))
    name_nodes(model)
    unshare_initializers(model)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, str(dst))
    return model


def block_of(node: onnx.NodeProto) -> str:
    """Sweep unit: a subnet module (/subnet/fusions.2/...), a classifier module (/conv1_1/Conv), or the classifier's
    backward-pass operators, grouped by kind (they carry no module path)."""
    parts = node.name.strip("/").split("/")
    if parts[0] == "subnet" and len(parts) > 2:
        return "subnet." + parts[1]
    if len(parts) == 1:
        return "classifier-backward." + re.sub(r"_\d+$", "", parts[0])
    return "classifier." + re.sub(r"_\d+$", "", parts[0])


def activation_products(model: onnx.ModelProto) -> list[str]:
    """MatMuls of two activations (attention's scores and its weighted sum of values): kept float. Quantized, they
    make ONNX Runtime run the softmax between them as QLinearSoftmax and OpenVINO run them in f32 rather than bf16,
    so the step got slower, not faster (benchmarks/quantization.py); the projections (weight @ tokens) still quantize."""
    weights = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]


def quantizable_blocks(model: onnx.ModelProto, exclude: set[str]) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = collections.defaultdict(list)
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS and node.name not in exclude:
            blocks[block_of(node)].append(node.name)
    return dict(blocks)


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Reorder graph.node topologically, wave by wave (ONNX requires the order; ORT refuses a graph without it)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise QuantizationError(f"the converted graph has a cycle or a missing input at {pending[0].name}")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for n in ready:
            available.update(n.output)
        ordered += ready
    del graph.node[:]
    graph.node.extend(ordered)
