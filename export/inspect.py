"""`c2d inspect BUNDLE`: what is in a bundle, from its files alone (needs onnx, not torch)."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import onnx

from c2d.models.data import describe_subset
from c2d.runtime.bundle import BundleError, decode_metadata, read_manifest

_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
}


def _value_info(v) -> dict:
    t = v.type.tensor_type
    dims = [d.dim_param or d.dim_value for d in t.shape.dim]
    return {"name": v.name, "dtype": _DTYPES.get(t.elem_type, str(t.elem_type)), "shape": dims}


def describe_model(path: Path) -> dict:
    """Inputs, outputs, metadata, node count, op histogram and size of one ONNX file."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BundleError(f"{path} is not a readable ONNX file ({exc})") from exc
    meta = decode_metadata({p.key: p.value for p in model.metadata_props}, str(path))
    ops = collections.Counter(node.op_type for node in model.graph.node)
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": [_value_info(v) for v in model.graph.input],
        "outputs": [_value_info(v) for v in model.graph.output],
        "nodes": len(model.graph.node),
        "initializers": len(model.graph.initializer),
        "ops": dict(ops.most_common()),
        "metadata": json.loads(json.dumps(dataclasses.asdict(meta))),
    }


def describe_bundle(bundle: str | Path) -> dict:
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    files = {}
    for role, entry in (("generator", manifest.generator), ("vocoder", manifest.vocoder)):
        if entry.file:
            files[role] = {
                **describe_model(bundle / entry.file),
                "export_seconds": entry.export_seconds,
                "validation": entry.validation.get("max_relative_error"),
            }
    return {
        "bundle": str(bundle),
        "manifest": {k: v for k, v in manifest.as_dict().items() if k not in ("generator", "vocoder")},
        "vocoder_kind": manifest.vocoder.kind,
        "files": files,
    }


def format_description(desc: dict) -> str:
    m = desc["manifest"]
    lines = [
        f"bundle {desc['bundle']}: {m['variant']}, {m.get('precision', '?')}, format {m['format_version']}, "
        f"commit {m.get('source_commit', '?')}, created {m.get('created', '?')}",
        f"vocoder: {desc['vocoder_kind']}",
    ]
    generator = desc["files"].get("generator", {}).get("metadata", {})
    if "train_subset" in generator:
        lines.append(f"subnet trained on: {describe_subset(generator['train_subset'])}")
    for role, f in desc["files"].items():
        lines.append("")
        lines.append(
            f"{role}: {f['file']}  {f['bytes'] / 1e6:.2f} MB  opset {f['opset']}  {f['nodes']} nodes  "
            f"{f['initializers']} initializers  exported in {f['export_seconds']} s"
        )
        for kind in ("inputs", "outputs"):
            for v in f[kind]:
                lines.append(f"  {kind[:-1]:6s} {v['name']:9s} {v['dtype']:8s} [{', '.join(map(str, v['shape']))}]")
        lines.append("  ops: " + ", ".join(f"{op} {n}" for op, n in f["ops"].items()))
        meta = {k: v for k, v in f["metadata"].items() if k not in ("mel", "sde")}
        lines.append("  metadata: " + json.dumps(meta))
        lines.append(f"  mel: {json.dumps(f['metadata']['mel'])}")
        if "sde" in f["metadata"]:
            lines.append(f"  sde: {json.dumps(f['metadata']['sde'])}")
        if f["validation"] is not None:
            lines.append(f"  validation at export (max relative error vs PyTorch): {json.dumps(f['validation'])}")
    lines.append("")
    lines.append("files: every one matches the SHA-256 in manifest.json")
    v = desc.get("verification")
    if v is not None:
        errors = ", ".join(f"{k} {e:.1e}" for k, e in v["generator_parity"].items())
        vocoder = "" if v["vocoder_parity"] is None else f"; vocoder {v['vocoder_parity']:.1e}"
        lines.append(
            f"verify (ONNX Runtime fp32 vs the stored PyTorch outputs, budget {v['budget']:.0e}): {errors}{vocoder}: "
            + ("PASS" if v["passed"] else "FAIL")
        )
    return "\n".join(lines)
