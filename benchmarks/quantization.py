"""Every quantization mode of the shipped generator against fp32, side by side in one run on this machine.

python -m c2d.benchmarks.quantization [--bundle DIR] [--calib DIR] [--out-dir runs/quantization] [--count 10]

1. Calibration: `c2d calibrate` on the bundle (EM, 100 steps, every digit, gamma 3 and 0), reused if present.
2. Each variant is made by `c2d quantize`'s code path with the gate's limits lifted (so failing variants are still
   measured), on count x 10 held-out samples: worst per-step eps error, final log-Mel distance, evaluator digit
   accuracy of the quantized and the fp32 samples (same noise). Bundles are kept in --out-dir and reused.
3. Per-step latency, batch 1, ORT CPU, 2 threads: fp32 and every variant interleaved in rounds on recorded
   sampler inputs; median over rounds and the ratio to fp32.
4. Operator-level profile (ORT's profiler) of fp32 and each int8 variant: kernel time per operator type per step,
   which says where int8 wins or loses time.
The verdict: the fastest variant that passes the default gate, or fp32 if none is faster.
"""
from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

from c2d.benchmarks import ort_kernel_times, write_results
from c2d.calibration.record import load_recording, record
from c2d.export.quantize import Budget, quantize_bundle, quantize_generator_file
from c2d.runtime.backends import BackendOptions, open_backend
from c2d.runtime.bundle import read_manifest
from c2d.runtime.deployment import interleaved_rounds
from c2d.runtime.generate import default_bundle

VARIANTS = {  # name: (mode, calibration method)
    "int8-static minmax": ("int8-static", "minmax"),
    "mixed minmax": ("mixed", "minmax"),
    "int8-dynamic": ("int8-dynamic", "minmax"),
    "fp16": ("fp16", "minmax"),
    "int8-static percentile": ("int8-static", "percentile"),
}
LIFTED = dict(step_error=1e9, mel_distance=1e9, accuracy_drop=1e9)


def make_variant(bundle: Path, out: Path, mode: str, method: str, calib: Path, count: int, log) -> dict:
    if not (out / "manifest.json").is_file():
        start = time.time()
        quantize_bundle(bundle, out, mode, calib if mode in ("int8-static", "mixed") else None, method, Budget(count=count, **LIFTED),
                        evaluator_path=files("c2d.models.checkpoints") / "evaluator.pt", mixed_target=Budget().step_error / 2, log=log)
        log(f"{out.name}: made and measured in {time.time() - start:.0f} s")
    return read_manifest(out)


def step_feeds(calib: Path, n: int) -> list[dict[str, np.ndarray]]:
    """n recorded batch-1 inputs spread over the trajectory (real x_t at real noise levels)."""
    rec = load_recording(calib)
    rows = np.linspace(0, len(rec.feeds["x"]) - 1, n).astype(int)
    return [{k: v[r : r + 1] for k, v in rec.feeds.items()} for r in rows]


def latency(paths: dict[str, Path], feeds, threads: int, rounds: int) -> dict[str, dict]:
    backends = {name: open_backend("ort", p, BackendOptions(threads=threads)) for name, p in paths.items()}
    per_round = interleaved_rounds(backends, feeds, rounds, calls=len(feeds), warmup=3)
    return {name: {"step_ms": statistics.median(v), "rounds_ms": [round(x, 2) for x in v]} for name, v in per_round.items()}


def op_profile(path: Path, feeds, threads: int) -> dict[str, float]:
    """Kernel milliseconds per operator type per step, from ORT's own profiler."""
    per_op = collections.Counter()
    for op, _, ms in ort_kernel_times(path, feeds, threads):
        per_op[op] += ms
    return {op: round(ms, 3) for op, ms in per_op.most_common()}


def passes(measured: dict, budget: Budget) -> list[str]:
    fails = []
    if measured["max_step_error"] > budget.step_error:
        fails.append("step error")
    if measured["mel_distance"] > budget.mel_distance:
        fails.append("log-Mel")
    if measured["accuracy"] is not None and measured["accuracy_fp32"] - measured["accuracy"] > budget.accuracy_drop + 1e-9:
        fails.append("accuracy")
    return fails


def markdown(result: dict) -> str:
    b = result["default_budget"]
    lines = [f"per-step latency: batch 1, ORT CPU, {result['threads']} threads, median of {result['rounds']} interleaved rounds; "
             f"quality on {result['samples']} held-out samples (same noise as fp32); default gate: step error <= {b['step_error']}, "
             f"log-Mel distance <= {b['mel_distance']}, accuracy drop <= {b['accuracy_drop']:.0%}", "",
             "| variant | file MB | % of fp32 | ms/step | ratio to fp32 | worst step error | log-Mel distance | accuracy (fp32) | gate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["variants"].items():
        m = r.get("measured")
        quality = (f"{m['max_step_error']:.4f} | {m['mel_distance']:.3f} | {m['accuracy'] * 100:.0f} % ({m['accuracy_fp32'] * 100:.0f} %)"
                   if m else "- | - | -")
        gate = "-" if m is None else ("pass" if not r["fails"] else "fail: " + ", ".join(r["fails"]))
        lines.append(f"| {name} | {r['bytes'] / 1e6:.2f} | {r['size_ratio'] * 100:.0f} % | {r['step_ms']:.2f} | {r['latency_ratio']:.2f} | {quality} | {gate} |")
    lines += ["", f"verdict: {result['verdict']}", "", "kernel ms per step by operator type (ORT profiler; top 8):", ""]
    for name, ops in result["op_profile"].items():
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(ops.items())[:8])
        lines.append(f"- {name} (total {sum(ops.values()):.2f}): {top}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=default_bundle())
    ap.add_argument("--calib", type=Path, default=Path("runs/calib-small"))
    ap.add_argument("--out-dir", type=Path, default=Path("runs/quantization"))
    ap.add_argument("--count", type=int, default=10, help="held-out samples per digit for the quality columns")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--latency-only", nargs="*", default=[], choices=list(VARIANTS),
                    help="variants timed (and sized) without the quality run, for modes too slow to sample 100 x 100 steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/quantization.json"))
    args = ap.parse_args()
    log = lambda msg: print(msg, flush=True)
    if not (args.calib / "calibration.json").is_file():
        record(args.bundle, args.calib, log=log)
    fp32_file = args.bundle / read_manifest(args.bundle)["generator"]["file"]
    paths, variants = {"fp32": fp32_file}, {"fp32": {"bytes": fp32_file.stat().st_size}}
    for name in args.variants:
        mode, method = VARIANTS[name]
        out = args.out_dir / name.replace(" ", "-")
        manifest = make_variant(args.bundle, out, mode, method, args.calib, args.count, log)
        paths[name] = out / manifest["generator"]["file"]
        measured = manifest["quantization"]["measured"]
        variants[name] = {"bytes": manifest["generator"]["bytes"], "measured": measured, "fails": passes(measured, Budget()),
                          "quantization": {k: v for k, v in manifest["quantization"].items() if k not in ("budget", "measured")}}
    for name in args.latency_only:
        mode, method = VARIANTS[name]
        path = args.out_dir / (name.replace(" ", "-") + "-latency-only") / "generator.onnx"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as work:
                quantize_generator_file(fp32_file, path, mode, None, method, 0.0, Path(work), log)
        paths[name] = path
        variants[name] = {"bytes": path.stat().st_size, "measured": None, "fails": ["not measured"]}
    log("latency (interleaved rounds)")
    feeds = step_feeds(args.calib, 20)
    lat = latency(paths, feeds, args.threads, args.rounds)
    for name, v in variants.items():
        v.update(step_ms=lat[name]["step_ms"], rounds_ms=lat[name]["rounds_ms"], latency_ratio=lat[name]["step_ms"] / lat["fp32"]["step_ms"],
                 size_ratio=v["bytes"] / variants["fp32"]["bytes"])
    log("operator profiles")
    profiled = ["fp32"] + [n for n in variants if "int8" in n or "mixed" in n]
    ops = {name: op_profile(paths[name], feeds, args.threads) for name in profiled}
    passing = [n for n, v in variants.items() if n != "fp32" and not v["fails"] and v["latency_ratio"] < 1.0]
    best = min(passing, key=lambda n: variants[n]["step_ms"]) if passing else None
    verdict = (f"{best} is the fastest variant that passes the default gate ({variants[best]['latency_ratio']:.2f}x fp32 per step)"
               if best else "no quantized variant is both faster than fp32 and within the default gate: fp32 stays the shipped precision")
    result = {"command": "python -m c2d.benchmarks.quantization", "date": time.strftime("%Y-%m-%d"), "bundle": str(args.bundle),
              "threads": args.threads, "rounds": args.rounds, "samples": args.count * 10, "default_budget": Budget().__dict__,
              "variants": variants, "op_profile": ops, "verdict": verdict, "recommended": best or "fp32"}
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
