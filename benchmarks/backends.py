"""Per-step latency of the shipped generator on every engine a user could pick, side by side in one run.

python -m c2d.benchmarks.backends [--int8-bundle runs/quantization/int8-static-minmax] [--threads 2] [--rounds 7]

PyTorch eager fp32 and bf16 (autocast; autograd for the taps and the guidance gradient: what a user would run
instead of c2d), ONNX Runtime fp32 and int8 (a QDQ bundle from `c2d quantize`), OpenVINO f32, bf16 and int8 (the
same QDQ file). Batch 1, one guided graph call at t = 0.5, interleaved rounds (every engine sees the same machine
state), median over rounds, and the ratio of each to PyTorch bf16. Each engine's parity with PyTorch fp32 on the
bundle's reference cases is listed next to it, and each fp32-bundle engine runs the quantization issue's quality
gate against ONNX Runtime fp32 (same digits and noise, --gate-count per digit, EM 100 steps, evaluator accuracy).
"""

from __future__ import annotations

import statistics
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from c2d.benchmarks import harness
from c2d.benchmarks.harness import write_results
from c2d.models.checkpoint import build_single_backbone, load_checkpoint
from c2d.models.checkpoints import SHIPPED_SUBNET
from c2d.runtime.backends import BackendOptions, BackendUnavailable, open_backend
from c2d.runtime.bundle import read_manifest
from c2d.runtime.contract import GENERATOR_FILE, MANIFEST_FILE
from c2d.runtime.parity import check_parity

CKPT = files("c2d.models.checkpoints") / SHIPPED_SUBNET


def engines(bundle: Path, int8_bundle: Path | None, threads: int) -> dict[str, object]:
    """name -> backend (or a torch callable wrapped to the backend's run signature)."""
    out = {}
    specs = [("ORT fp32", "ort", bundle, None), ("OpenVINO f32", "openvino", bundle, "f32"), ("OpenVINO bf16", "openvino", bundle, "bf16")]
    if int8_bundle is not None:
        specs += [("ORT int8", "ort", int8_bundle, None), ("OpenVINO int8", "openvino", int8_bundle, "f32")]
    for name, backend, path, precision in specs:
        try:
            out[name] = (open_backend(backend, path / GENERATOR_FILE, BackendOptions(threads=threads, precision=precision)), path)
        except BackendUnavailable as exc:
            print(f"{name}: skipped ({exc})")
    return out


def torch_step(model, feeds: dict[str, np.ndarray], bf16: bool):
    x, t, y, g = (torch.from_numpy(feeds[k]) for k in ("x", "t", "y", "gamma"))

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.guided(x, t, y, g)[0]

    return run


def quality_gates(opened: dict, bundle: Path, threads: int, count: int) -> dict[str, dict]:
    """The quantization issue's gate (default budget) for every engine on the fp32 bundle, against ORT fp32."""
    from c2d.export.quantize import evaluator_accuracy
    from c2d.models.evaluator import load_evaluator
    from c2d.runtime.gate import Budget, compare, reference_run
    from c2d.runtime.generate import Generator

    evaluator = load_evaluator(files("c2d.models.checkpoints") / "evaluator.pt")
    reference = Generator(bundle, "ort", BackendOptions(threads=threads))
    accuracy = lambda log_mel, digits: evaluator_accuracy(log_mel, digits, reference.meta.mel, evaluator)
    run = reference_run(reference, Budget(count=count))  # sampled once for all engines
    out = {}
    for name, (backend, path) in opened.items():
        if path != bundle or name == "ORT fp32":
            continue
        candidate = Generator(bundle, "ort", BackendOptions(threads=threads))
        candidate.model = backend
        result = compare(run, candidate, Budget(count=count), accuracy)
        out[name] = {**result.summary(), "failures": result.failures}
        print(f"{name}: gate {out[name]}", flush=True)
    return out


def int8_bundle_of(bundle: Path, int8_bundle: Path) -> Path | None:
    """The int8 bundle, if there is one quantized from the same checkpoints as `bundle` (else its rows would time
    and gate other weights)."""
    if not (int8_bundle / MANIFEST_FILE).is_file():
        print(f"int8 rows skipped: no bundle at {int8_bundle}")
        return None
    if read_manifest(int8_bundle).checkpoints != read_manifest(bundle).checkpoints:
        print(f"int8 rows skipped: {int8_bundle} was quantized from other checkpoints than {bundle}")
        return None
    return int8_bundle


def main() -> None:
    ap = harness.parser(__doc__, "backends", threads=2, rounds=7, bundle=True)
    ap.add_argument("--int8-bundle", type=Path, default=Path("runs/quantization/int8-static-minmax"))
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--gate-count", type=int, default=10, help="samples per digit for the quality gate (0: skip)")
    ap.add_argument("--gate-engines", nargs="*", default=None, help="engines to gate [default: every engine on the fp32 bundle]")
    args = harness.parse(ap)
    torch.set_num_threads(args.threads)
    int8 = int8_bundle_of(args.bundle, args.int8_bundle)
    ckpt = load_checkpoint(CKPT)
    model = build_single_backbone(ckpt, str(CKPT)).float().eval()
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((1, 1, 80, 88), dtype=np.float32),
        "t": np.array([0.5], np.float32),
        "y": np.eye(10, dtype=np.float32)[[7]],
        "gamma": np.array([3.0], np.float32),
    }
    opened = engines(args.bundle, int8, args.threads)
    runs = {"PyTorch eager fp32": torch_step(model, feeds, False), "PyTorch eager bf16": torch_step(model, feeds, True)}
    runs |= {name: (lambda b=b: b.run(feeds, ["eps"])) for name, (b, _) in opened.items()}
    for run in runs.values():  # warm-up
        run(), run()
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                run()
            times[name].append((time.perf_counter() - start) / args.calls * 1e3)
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["PyTorch eager bf16"]
    parity = {name: max(check_parity(b, args.bundle, 1.0).errors.values()) for name, (b, _) in opened.items()}
    gated = {k: v for k, v in opened.items() if args.gate_engines is None or k in args.gate_engines}
    gates = quality_gates(gated, args.bundle, args.threads, args.gate_count) if args.gate_count else {}
    rows = {
        name: {
            "step_ms": ms,
            "ratio_to_pytorch_bf16": ms / base,
            "rounds_ms": [round(v, 2) for v in times[name]],
            "parity_vs_pytorch_fp32": parity.get(name),
            "gate": gates.get(name),
        }
        for name, ms in med.items()
    }
    lines = [
        f"per-step latency, shipped generator, batch 1, {args.threads} threads, median of {args.rounds} interleaved rounds x {args.calls} calls",
        "",
        "| engine | ms/step | ratio to PyTorch bf16 | worst relative error vs PyTorch fp32 (reference cases) | quality gate vs ORT fp32 |",
        "|---|---|---|---|---|",
    ]
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["step_ms"]):
        p = "-" if r["parity_vs_pytorch_fp32"] is None else f"{r['parity_vs_pytorch_fp32']:.1e}"
        g = r["gate"]
        gate = (
            "-"
            if g is None
            else (
                f"{'pass' if not g['failures'] else 'fail'}: step {g['max_step_error']:.4f}, log-Mel {g['mel_distance']:.3f}, "
                f"accuracy {g['accuracy'] * 100:.0f} % (ORT fp32 {g['accuracy_fp32'] * 100:.0f} %)"
            )
        )
        lines.append(f"| {name} | {r['step_ms']:.2f} | {r['ratio_to_pytorch_bf16']:.2f} | {p} | {gate} |")
    result = {
        "command": "python -m c2d.benchmarks.backends",
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "int8_bundle": str(int8) if int8 else None,
        "engines": rows,
    }
    write_results(args.results, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
