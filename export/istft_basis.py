"""The inverse STFT's basis computed inside the ONNX graph instead of stored in it.

The Fourier vocoder's ConvTranspose1d weight is a fixed windowed inverse-DFT basis [2 * bins, 1, n_fft]: 4.2 MB of
float32 for n_fft 1024, more than the trained weights (4 MB). The tracer stores it as an initializer; this pass swaps
the initializer for a couple of dozen nodes that compute the same tensor from Range, Mod, Cos and Sin (models/vocoder.py's
formula, with k * n reduced mod n_fft in int64 first so that the angles stay exact). Every input of those nodes is
constant, so ONNX Runtime and OpenVINO fold them once when the model is loaded: no cost per call. The exporter's
validation against PyTorch runs after this pass.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))


def basis_nodes(out: str, n_fft: int, prefix: str | None = None) -> list[onnx.NodeProto]:
    """Nodes computing out = [coef cos(2 pi k n / N); -coef sin(2 pi k n / N)] * hann(n) / N, shape [2 * bins, 1, N];
    their intermediate tensors are named prefix + ... (default: out + "__")."""
    bins, p = n_fft // 2 + 1, prefix or f"{out}__"
    coef = np.full((bins, 1), 2.0, np.float32)
    coef[0] = coef[-1] = 1.0
    ints = lambda name, value: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.int64), name))
    nodes = [
        ints(p + "zero", 0),
        ints(p + "one", 1),
        ints(p + "bins", bins),
        ints(p + "n_fft", n_fft),
        ints(p + "col", [-1, 1]),
        _const(p + "step", 2 * math.pi / n_fft),
        _const(p + "half", 0.5),
        _const(p + "coef", coef / n_fft),
        helper.make_node("Range", [p + "zero", p + "bins", p + "one"], [p + "k_flat"]),  # int64: exact index arithmetic
        helper.make_node("Range", [p + "zero", p + "n_fft", p + "one"], [p + "n"]),  # [N]
        helper.make_node("Reshape", [p + "k_flat", p + "col"], [p + "k"]),  # [bins, 1]
        helper.make_node("Mul", [p + "k", p + "n"], [p + "kn"]),  # [bins, N]
        helper.make_node("Mod", [p + "kn", p + "n_fft"], [p + "kn_mod"]),
        helper.make_node("Cast", [p + "kn_mod"], [p + "kn_float"], to=TensorProto.FLOAT),
        helper.make_node("Cast", [p + "n"], [p + "n_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "kn_float", p + "step"], [p + "angle"]),
        helper.make_node("Cos", [p + "angle"], [p + "cos"]),
        helper.make_node("Sin", [p + "angle"], [p + "sin"]),
        helper.make_node("Mul", [p + "n_float", p + "step"], [p + "n_angle"]),  # periodic Hann: 0.5 - 0.5 cos(2 pi n / N)
        helper.make_node("Cos", [p + "n_angle"], [p + "n_cos"]),
        helper.make_node("Mul", [p + "n_cos", p + "half"], [p + "n_half"]),
        helper.make_node("Sub", [p + "half", p + "n_half"], [p + "window"]),
        helper.make_node("Mul", [p + "window", p + "coef"], [p + "scale"]),  # [bins, N]
        helper.make_node("Mul", [p + "cos", p + "scale"], [p + "re"]),
        helper.make_node("Mul", [p + "sin", p + "scale"], [p + "im_pos"]),
        helper.make_node("Neg", [p + "im_pos"], [p + "im"]),
        helper.make_node("Concat", [p + "re", p + "im"], [p + "flat"], axis=0),  # [2 * bins, N]
        ints(p + "axis", [1]),
        helper.make_node("Unsqueeze", [p + "flat", p + "axis"], [out]),  # [2 * bins, 1, N]
    ]
    for node in nodes:
        node.name = node.output[0] + "__node"  # named: quantizers and fp16 conversion take node names to keep in float32
    return nodes


def inline_istft_basis(path, n_fft: int) -> list[str]:
    """Replace the ConvTranspose weight of shape [2 * bins, 1, n_fft] in the ONNX file at `path` (an initializer or a
    Constant node, as the tracer leaves buffers) by basis_nodes. The stored values must be that basis (checked to
    1e-6): another weight of that shape is left alone. Returns the names of the nodes added (empty: none replaced)."""
    model = onnx.load(str(path))
    expected = _reference_basis(n_fft)
    inits = {i.name: i for i in model.graph.initializer}
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    for node in list(model.graph.node):
        if node.op_type != "ConvTranspose":
            continue
        name = node.input[1]
        if name in inits:
            stored = inits[name]
        elif name in constants and constants[name].attribute[0].name == "value":
            stored = constants[name].attribute[0].t
        else:
            continue
        if tuple(stored.dims) != expected.shape or stored.data_type != TensorProto.FLOAT:
            continue
        if np.abs(numpy_helper.to_array(stored) - expected).max() > 1e-6:
            continue
        if name in inits:
            model.graph.initializer.remove(stored)
        else:
            model.graph.node.remove(constants[name])
        taken = {o for n in model.graph.node for o in n.output} | set(inits)
        prefix = next(f"{name}__basis{k}_" for k in range(len(taken) + 1) if not any(t.startswith(f"{name}__basis{k}_") for t in taken))
        added = basis_nodes(name, n_fft, prefix)
        for new in reversed(added):
            model.graph.node.insert(0, new)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return [n.name for n in added]
    return []


def _reference_basis(n_fft: int) -> np.ndarray:
    k, n = np.arange(n_fft // 2 + 1)[:, None], np.arange(n_fft)[None, :]
    coef = np.where((k == 0) | (k == n_fft // 2), 1.0, 2.0)
    angle = 2 * np.pi * ((k * n) % n_fft) / n_fft
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    return (np.concatenate([coef * np.cos(angle), -coef * np.sin(angle)]) * window / n_fft)[:, None, :].astype(np.float32)
