"""The single backbone against the two-model pipeline, per guided step, on every engine, side by side in one run.

python -m c2d.benchmarks.backbones [--single DIR] [--two-model DIR] [--also LABEL=DIR ...] [--threads 1 2]
                                   [--rounds 7] [--calls 10] [--results benchmarks/results/backbones.json]

Each generator graph (the shipped single-backbone bundle, a two-model bundle exported from the shipped U-Net and
classifier, and any --also bundles, e.g. the same checkpoints exported by an older commit) runs on ORT fp32 and,
where installed, OpenVINO f32 and bf16. Batch 1; ten inputs with x ~ N(0, 1) at t spread over [0.02, 1], digit 3,
gamma 3; every graph and engine interleaved in rounds, median over rounds. Beside the latency ratio: the parameter and
MAC ratios from the bundles' metadata, the achieved GMAC/s, and this CPU's GEMM rates measured in the same run
(1024 x 1024 x 1024 on each engine: fp32, bf16 and int8; benchmarks/peaks.py). ORT's profiler then splits each graph's
kernel time per step into convolutions and everything else, per part of the graph (classifier forward and backward passes, subnet, U-Net).
"""

from __future__ import annotations

import collections
import statistics
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import onnx

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cpu_model, interleaved_rounds, ort_kernel_times, write_results
from c2d.benchmarks.peaks import gemm_peaks
from c2d.export.exporter import export_bundle
from c2d.runtime.backends import BackendOptions, BackendUnavailable, open_backend
from c2d.runtime.bundle import decode_metadata, read_manifest
from c2d.runtime.contract import MANIFEST_FILE
from c2d.runtime.generate import default_bundle

CKPT = files("c2d.models.checkpoints")
ENGINES = (("ORT fp32", "ort", None), ("OpenVINO f32", "openvino", "f32"), ("OpenVINO bf16", "openvino", "bf16"))


def step_feeds(n: int = 10) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = np.eye(10, dtype=np.float32)[[3]]
    return [
        {"x": rng.standard_normal((1, 1, 80, 88), dtype=np.float32), "t": np.array([t], np.float32), "y": y, "gamma": np.array([3.0], np.float32)}
        for t in np.linspace(0.02, 1.0, n)
    ]


def two_model_bundle(out: Path) -> Path:
    if not (out / MANIFEST_FILE).is_file():
        export_bundle([str(CKPT / "unet-small.pt"), str(CKPT / "classifier-small.pt")], out, vocoder="griffin-lim")
    return out


def graph_facts(bundle: Path) -> dict:
    path = bundle / str(read_manifest(bundle).generator.file)
    model = onnx.load(str(path))
    meta = decode_metadata({p.key: p.value for p in model.metadata_props}, str(path))
    params = meta.params["total"] if isinstance(meta.params, dict) else meta.params
    return {"file": str(path), "variant": meta.variant, "params": params, "macs_per_step": meta.macs_per_step, "nodes": len(model.graph.node)}


def part_of(node_name: str) -> str:
    """Which part of the graph a node belongs to, from the exporter's scope names."""
    if node_name.startswith("/subnet"):
        return "subnet"
    if node_name.startswith("/unet"):
        return "U-Net"
    return "classifier fwd + bwd"


def kernel_split(path: str, feeds, threads: int) -> dict[str, float]:
    """ORT profiler: kernel ms per step, per graph part x (conv | other)."""
    split = collections.Counter()
    for op, node, ms in ort_kernel_times(Path(path), feeds, threads):
        kind = "conv" if op in ("Conv", "ConvTranspose", "FusedConv") else "other"
        split[f"{part_of(node)} {kind}"] += ms
    return {k: round(v, 2) for k, v in sorted(split.items())}


def main() -> None:
    ap = harness.parser(__doc__, "backbones", rounds=7)
    ap.add_argument("--single", type=Path, default=default_bundle())
    ap.add_argument("--two-model", type=Path, default=Path("runs/bundles/two-model"), help="exported here if missing")
    ap.add_argument("--also", nargs="*", default=[], metavar="LABEL=DIR", help="more generator bundles to time alongside")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--calls", type=int, default=10)
    args = ap.parse_args()
    graphs = {"single backbone": args.single, "two-model": two_model_bundle(args.two_model)}
    graphs |= {label: Path(d) for label, d in (a.split("=", 1) for a in args.also)}
    facts = {label: graph_facts(d) for label, d in graphs.items()}
    feeds = step_feeds()
    result = {"command": "python -m c2d.benchmarks.backbones", "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "graphs": facts, "runs": {}}
    lines = [f"Per guided step, batch 1, median of {args.rounds} interleaved rounds x {args.calls} calls; {cpu_model()}.", ""]
    single, two = facts["single backbone"], facts["two-model"]
    lines += [
        f"Parameters single / two-model: {single['params'] / two['params']:.2f}; MACs per guided step: "
        f"{single['macs_per_step'] / two['macs_per_step']:.2f} ({single['macs_per_step'] / 1e6:.0f} M / {two['macs_per_step'] / 1e6:.0f} M); "
        f"nodes {single['nodes']} / {two['nodes']}.",
        "",
    ]
    for threads in args.threads:
        opened = {}
        for engine, backend, precision in ENGINES:
            for label in graphs:
                try:
                    opened[(engine, label)] = open_backend(backend, Path(facts[label]["file"]), BackendOptions(threads=threads, precision=precision))
                except BackendUnavailable as exc:
                    print(f"{engine}: skipped ({exc})")
                    break
        per_round = interleaved_rounds({f"{e} | {g}": b for (e, g), b in opened.items()}, feeds, args.rounds, args.calls, warmup=3)
        peaks = gemm_peaks(threads)
        ms = {key: statistics.median(v) for key, v in per_round.items()}
        run = {
            "gemm_peaks_gmacs": {k: round(v, 1) for k, v in peaks.items()},
            "step_ms": {k: round(v, 2) for k, v in ms.items()},
            "rounds_ms": {k: [round(x, 2) for x in v] for k, v in per_round.items()},
            "kernel_ms": {label: kernel_split(facts[label]["file"], feeds, threads) for label in graphs},
        }
        result["runs"][str(threads)] = run
        peak_line = ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        lines += [
            f"### {threads} thread{'s' if threads > 1 else ''} (GEMM 1024^3 in GMAC/s: {peak_line})",
            "",
            "| engine | graph | ms/step | ratio to two-model | GMAC/s |",
            "|---|---|---|---|---|",
        ]
        for engine, _, _ in ENGINES:
            base = ms.get(f"{engine} | two-model")
            for label in graphs:
                m = ms.get(f"{engine} | {label}")
                if m is not None:
                    lines.append(f"| {engine} | {label} | {m:.2f} | {m / base:.2f} | {facts[label]['macs_per_step'] / m / 1e6:.1f} |")
        parts = sorted({p for split in run["kernel_ms"].values() for p in split})
        lines += [
            "",
            "ORT kernel ms per step by part of the graph:",
            "",
            "| graph | " + " | ".join(parts) + " | total |",
            "|---|" + "---|" * (len(parts) + 1),
        ]
        for label, split in run["kernel_ms"].items():
            lines.append(f"| {label} | " + " | ".join(f"{split.get(p, 0):.2f}" for p in parts) + f" | {sum(split.values()):.2f} |")
        lines.append("")
    write_results(args.results, result, "\n".join(lines))


if __name__ == "__main__":
    main()
