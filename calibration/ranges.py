"""Activation ranges of the generator graph by noise level, on recorded sampler feeds.

Static int8 gives every tensor one range for the whole trajectory; where a tensor's magnitude swings with
the noise level, the low-noise steps use a sliver of that range (few effective bits). This summary shows
how much, per band of diffusion time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from c2d.runtime.sde import SDEConfig, alpha_sigma

T_EDGES = (0.0, 0.02, 0.1, 0.3, 0.6, 1.0 + 1e-9)  # diffusion-time bands (t = 1: pure noise)


def feature_map_tensors(model: onnx.ModelProto, min_rank: int = 3) -> list[str]:
    """Float tensors of rank >= min_rank computed by the graph (activations, not shape arithmetic)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    names = []
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type == onnx.TensorProto.FLOAT and tt.HasField("shape") and len(tt.shape.dim) >= min_rank:
            names.append(vi.name)
    return list(dict.fromkeys(names))


def exposing_session(path: str | Path, names: list[str]) -> ort.InferenceSession:
    """A session whose outputs are the given intermediate tensors (graph optimizations off, so they survive)."""
    model = onnx.load(str(path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def absmax_per_tensor(session: ort.InferenceSession, names: list[str], feeds: dict[str, np.ndarray], chunk: int = 4) -> np.ndarray:
    """max |value| of each named tensor over the rows of `feeds`: [len(names)]."""
    out = np.zeros(len(names))
    for lo in range(0, len(feeds["x"]), chunk):
        values = session.run(names, {k: v[lo : lo + chunk] for k, v in feeds.items()})
        out = np.maximum(out, [float(np.abs(v).max()) if v.size else 0.0 for v in values])
    return out


def ranges_by_noise_level(path: str | Path, feeds: dict[str, np.ndarray], sde: SDEConfig, rows_per_band: int = 8) -> dict:
    """Per diffusion-time band: sigma range, input/output magnitudes, and how much of its calibrated (all-band)
    range each activation uses there (median share; count under 10 %, i.e. under about 3.3 bits of int8)."""
    names = feature_map_tensors(onnx.load(str(path)))
    session = exposing_session(path, names)
    t = feeds["t"].astype(np.float64)
    bands = []
    for lo, hi in zip(T_EDGES[:-1], T_EDGES[1:]):
        rows = np.flatnonzero((t >= lo) & (t < hi))
        if len(rows) == 0:
            continue
        pick = rows[np.linspace(0, len(rows) - 1, min(rows_per_band, len(rows))).astype(int)]
        bands.append((lo, hi, rows, absmax_per_tensor(session, names, {k: v[pick] for k, v in feeds.items()})))
    if not bands:
        return {"tensors": len(names), "bands": []}
    overall = np.max([b[3] for b in bands], axis=0)
    used = overall > 0
    summary = []
    for _lo, _hi, rows, absmax in bands:
        share = absmax[used] / overall[used]
        _, sig = alpha_sigma(t[rows], sde)
        by_name = dict(zip(names, absmax))
        summary.append(
            {
                "t": [round(float(t[rows].min()), 4), round(float(t[rows].max()), 4)],
                "sigma": [round(float(sig.min()), 4), round(float(sig.max()), 4)],
                "rows": int(len(rows)),
                "absmax": {k: round(float(by_name[k]), 4) for k in ("eps", "guidance") if k in by_name}
                | {"x": round(float(np.abs(feeds["x"][rows]).max()), 4)},
                "median_share_of_range": round(float(np.median(share)), 3),
                "tensors_under_10pct": int((share < 0.1).sum()),
            }
        )
    swing = np.max([b[3] for b in bands], axis=0) / np.maximum(np.min([b[3] for b in bands], axis=0), 1e-12)
    widest = [{"tensor": names[i], "max_over_min_absmax": round(float(swing[i]), 1)} for i in np.argsort(-swing)[:5]]
    return {"tensors": len(names), "bands": summary, "widest_swing": widest}


def ranges_markdown(ranges: dict) -> str:
    lines = [
        f"activation ranges by noise level ({ranges['tensors']} activation tensors)",
        "",
        "| t | sigma | rows | max abs x | max abs eps | max abs guidance | median share of range | tensors < 10 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in ranges["bands"]:
        a = b["absmax"]
        lines.append(
            f"| {b['t'][0]:.3f}-{b['t'][1]:.3f} | {b['sigma'][0]:.3f}-{b['sigma'][1]:.3f} | {b['rows']} | {a.get('x', 0):.2f} | "
            f"{a.get('eps', 0):.2f} | {a.get('guidance', 0):.2f} | {b['median_share_of_range']:.2f} | {b['tensors_under_10pct']} |"
        )
    return "\n".join(lines) + "\n"
