"""Export every shipped generator, summarise the bundles, and measure batched vs separate backward passes.

python -m c2d.benchmarks.export_shipped [--out-dir runs/bundles] [--results benchmarks/results/export_shipped.md]

1. `c2d export` of the shipped checkpoints: single backbone (the shipped generator, models.checkpoints.SHIPPED_SUBNET),
   its no-gradient-taps ablation, U-Net + classifier (Griffin-Lim vocoder), and the HiFi-GAN vocoder once: file size,
   nodes, Conv / ConvTranspose counts, export time, validation errors (from each bundle's manifest).
2. The single-backbone graph built three ways (two backward passes or one batched pass of 2B; stride-1 adjoints as
   Conv with flipped weights or as ConvTranspose): ONNX Runtime CPU per-call latency, interleaved rounds in one
   process, median ratios to the exporter's default.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from c2d.export.exporter import export_bundle, load_generator, onnx_export
from c2d.export.graphs import SingleBackboneGraph
from c2d.export.inspect import describe_bundle
from c2d.models.checkpoints import SHIPPED_SUBNET
from c2d.runtime.contract import GENERATOR_INPUTS, GENERATOR_OUTPUTS

CKPT = files("c2d.models.checkpoints")
BUNDLES = {
    "single-backbone": [SHIPPED_SUBNET],
    "single-backbone-notaps": ["subnet-small-notaps.pt"],
    "two-model": ["unet-small.pt", "classifier-small.pt"],
}


def summarize_bundles(out_dir: Path) -> list[str]:
    rows = [
        "| bundle | vocoder | generator MB | nodes | Conv | ConvTranspose | export s "
        "| max rel. error eps / logits / guidance | 100-step sampling rel. error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ckpts in BUNDLES.items():
        vocoder = "hifigan" if name == "single-backbone" else "griffin-lim"
        manifest = export_bundle([str(CKPT / c) for c in ckpts], out_dir / name, vocoder=vocoder)
        desc = describe_bundle(out_dir / name)["files"]["generator"]
        err = manifest.generator.validation["max_relative_error"]
        rows.append(
            f"| {name} | {vocoder} | {desc['bytes'] / 1e6:.2f} | {desc['nodes']} | {desc['ops'].get('Conv', 0)} | "
            f"{desc['ops'].get('ConvTranspose', 0)} | {manifest.generator.export_seconds:.2f} | "
            f"{err['eps']:.1e} / {err['logits']:.1e} / {err['guidance']:.1e} | "
            f"{manifest.generator.validation['sampling_100_steps_relative_error']:.1e} |"
        )
        if manifest.vocoder.file:
            v = describe_bundle(out_dir / name)["files"]["vocoder"]
            rows.append(
                f"| (vocoder) | hifigan | {v['bytes'] / 1e6:.2f} | {v['nodes']} | {v['ops'].get('Conv', 0)} | "
                f"{v['ops'].get('ConvTranspose', 0)} | {manifest.vocoder.export_seconds:.2f} | "
                f"{manifest.vocoder.validation['max_relative_error']:.1e} (waveform) | - |"
            )
    return rows


GRAPH_VARIANTS = {  # label -> (batch_cotangents, adjoint_as_conv); the first is the exporter's default
    "two passes, Conv adjoints": (False, True),
    "two passes, ConvTranspose adjoints": (False, False),
    "one batched pass (2B), Conv adjoints": (True, True),
}


def time_graph_variants(batch_sizes=(1, 4), rounds: int = 7, calls: int = 10) -> list[str]:
    """ORT CPU latency of the single-backbone graph built three ways, interleaved; ratio to the default."""
    _, model, _, _ = load_generator([str(CKPT / SHIPPED_SUBNET)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, (batched, as_conv)) in enumerate(GRAPH_VARIANTS.items()):
            path = Path(tmp) / f"{i}.onnx"
            args = (torch.randn(2, 1, 80, 88), torch.rand(2), torch.eye(10)[:2], torch.full((2,), 3.0))
            onnx_export(
                SingleBackboneGraph(model, batched, as_conv).eval(),
                args,
                path,
                GENERATOR_INPUTS,
                GENERATOR_OUTPUTS,
                {k: {0: "batch"} for k in GENERATOR_INPUTS + GENERATOR_OUTPUTS},
            )
            sessions[label] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    labels = list(GRAPH_VARIANTS)
    rows = [
        "| batch | " + " | ".join(f"{k} ms" for k in labels) + " | " + " | ".join(f"{k} / default" for k in labels[1:]) + " |",
        "|---|" + "---|" * (2 * len(labels) - 1),
    ]
    rng = np.random.default_rng(0)
    for b in batch_sizes:
        feeds = {
            "x": rng.standard_normal((b, 1, 80, 88), dtype=np.float32),
            "t": np.full(b, 0.5, np.float32),
            "y": np.eye(10, dtype=np.float32)[rng.integers(0, 10, b)],
            "gamma": np.full(b, 3.0, np.float32),
        }
        outs = [s.run(None, feeds) for s in sessions.values()]  # warm-up, and all must agree
        assert all(np.allclose(a, c, rtol=1e-4, atol=1e-5) for other in outs[1:] for a, c in zip(outs[0], other))
        times = {k: [] for k in sessions}
        for _ in range(rounds):
            for k, s in sessions.items():
                start = time.perf_counter()
                for _ in range(calls):
                    s.run(None, feeds)
                times[k].append((time.perf_counter() - start) / calls * 1e3)
        med = [statistics.median(times[k]) for k in labels]
        rows.append(f"| {b} | " + " | ".join(f"{m:.2f}" for m in med) + " | " + " | ".join(f"{m / med[0]:.2f}" for m in med[1:]) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=Path("runs/bundles"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/export_shipped.md"))
    args = ap.parse_args()
    lines = [
        "# Export of the shipped checkpoints",
        "",
        f"`python -m c2d.benchmarks.export_shipped` on {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, onnxruntime {ort.__version__}, CPU.",
        "",
    ]
    lines += summarize_bundles(args.out_dir)
    lines += ["", "## How the backward passes are built: single backbone, ORT CPU, 2 threads, median of interleaved rounds", ""]
    lines += time_graph_variants()
    text = "\n".join(lines) + "\n"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
