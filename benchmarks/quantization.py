"""Every quantization mode of the shipped generator against fp32, side by side in one run on this machine.

python -m c2d.benchmarks.quantization [--bundle DIR] [--calib DIR] [--out-dir runs/quantization] [--count 10]
                                      [--variants ...] [--latency-only ...] [--threads 2] [--rounds 7]

1. Calibration: `c2d calibrate` on the bundle (the deployed sampler, every digit, its guidance scale and 0), reused
   if present (record it with --seeds 4 for the mixed variants: `c2d calibrate BUNDLE -o DIR --seeds 4`).
2. Each variant is made by `c2d quantize`'s code path with the gate's limits lifted (so failing variants are still
   measured), on count x 10 held-out samples on ORT: worst per-step eps error, final log-Mel distance, evaluator
   digit accuracy of the quantized and the fp32 samples (same noise). Bundles are kept in --out-dir and reused.
3. Per-step latency, batch 1, 2 threads, on every engine: ORT CPU, OpenVINO f32 and OpenVINO bf16 (for a QDQ
   graph OpenVINO runs the quantized operators in int8 and the rest in the precision named). fp32 and every variant
   on every engine interleaved in rounds on recorded sampler inputs; median over rounds, the ratio to ORT fp32 and
   to the best float path (the fastest of fp32 on the three engines), and the achieved GMAC/s (the bundle's MACs
   per step / time).
4. This CPU's GEMM peaks in the same run (benchmarks/peaks.py: fp32, bf16, int8 per engine), which the achieved
   GMAC/s is read against.
5. Operator-level profile (ORT's profiler) of fp32 and each int8 variant: kernel time per operator type per step,
   which says where int8 wins or loses time.
The verdict: the fastest (variant, engine) that passes the default gate, against the best float path.
"""

from __future__ import annotations

import collections
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cpu_model, interleaved_rounds, openvino_kernel_times, ort_kernel_times, write_results
from c2d.benchmarks.peaks import gemm_peaks
from c2d.calibration.record import load_recording, record
from c2d.export.exporter import read_metadata
from c2d.export.quantize import Budget, quantize_bundle, quantize_generator_file
from c2d.runtime.backends import BackendOptions, BackendUnavailable, open_backend
from c2d.runtime.bundle import BundleError, read_manifest
from c2d.runtime.contract import GENERATOR_FILE, MANIFEST_FILE

VARIANTS = {  # name: (mode, calibration method)
    "int8-static minmax": ("int8-static", "minmax"),
    "mixed minmax": ("mixed", "minmax"),
    "int8-dynamic": ("int8-dynamic", "minmax"),
    "fp16": ("fp16", "minmax"),
    "int8-static percentile": ("int8-static", "percentile"),
    "mixed percentile": ("mixed", "percentile"),
}
ENGINES = (("ORT", "ort", None), ("OpenVINO f32", "openvino", "f32"), ("OpenVINO bf16", "openvino", "bf16"))  # label, backend, precision
ORT_ONLY = ("int8-dynamic", "fp16")  # integer-input operators and float16 graphs: not OpenVINO CPU formats
LIFTED = dict(step_error=1e9, mel_distance=1e9, accuracy_drop=1e9)


def make_variant(bundle: Path, out: Path, mode: str, method: str, calib: Path, count: int, log) -> dict:
    if not (out / MANIFEST_FILE).is_file():
        start = time.time()
        quantize_bundle(
            bundle,
            out,
            mode,
            calib if mode in ("int8-static", "mixed") else None,
            method,
            Budget(count=count, **LIFTED),
            evaluator_path=files("c2d.models.checkpoints") / "evaluator.pt",
            mixed_target=Budget().step_error / 2,
            log=log,
        )
        log(f"{out.name}: made and measured in {time.time() - start:.0f} s")
    return read_manifest(out)


def step_feeds(calib: Path, n: int) -> list[dict[str, np.ndarray]]:
    """n recorded batch-1 inputs spread over the trajectory (real x_t at real noise levels)."""
    rec = load_recording(calib)
    rows = np.linspace(0, len(rec.feeds["x"]) - 1, n).astype(int)
    return [{k: v[r : r + 1] for k, v in rec.feeds.items()} for r in rows]


def latency(paths: dict[str, Path], feeds, threads: int, rounds: int, log) -> dict[str, dict[str, dict]]:
    """variant -> engine -> {step_ms, rounds_ms}: every variant on every engine that opens it, interleaved."""
    backends = {}
    for name, p in paths.items():
        for engine, backend, precision in ENGINES:
            if backend != "ort" and name in ORT_ONLY:
                continue
            try:
                backends[(name, engine)] = open_backend(backend, p, BackendOptions(threads=threads, precision=precision))
            except (BackendUnavailable, BundleError) as exc:
                log(f"{name} on {engine}: skipped ({exc})")
    per_round = interleaved_rounds(backends, feeds, rounds, calls=len(feeds), warmup=3)
    out: dict[str, dict[str, dict]] = collections.defaultdict(dict)
    for (name, engine), v in per_round.items():
        out[name][engine] = {"step_ms": statistics.median(v), "rounds_ms": [round(x, 2) for x in v]}
    return dict(out)


def op_profile(path: Path, feeds, threads: int) -> dict[str, float]:
    """Kernel milliseconds per operator type per step, from ORT's own profiler."""
    per_op = collections.Counter()
    for op, _, ms in ort_kernel_times(path, feeds, threads):
        per_op[op] += ms
    return {op: round(ms, 3) for op, ms in per_op.most_common()}


CONVOLUTIONS = ("Convolution", "ConvolutionBackpropData")  # OpenVINO's node types for Conv and ConvTranspose


def int8_bound(fp32_ops: dict[str, float], int8_ops: dict[str, float]) -> dict:
    """The best an int8 graph could do on OpenVINO if int8 cost nothing outside the convolutions: the fp32 graph's step
    with its convolution time replaced by the int8 graph's, as a fraction of the fp32 step (both at one precision)."""
    total, conv = sum(fp32_ops.values()), sum(fp32_ops.get(k, 0.0) for k in CONVOLUTIONS)
    conv_int8 = sum(int8_ops.get(k, 0.0) for k in CONVOLUTIONS)
    return {
        "fp32_ms": round(total, 3),
        "fp32_conv_ms": round(conv, 3),
        "int8_conv_ms": round(conv_int8, 3),
        "int8_total_ms": round(sum(int8_ops.values()), 3),
        "bound": round((total - conv + conv_int8) / total, 3),
    }


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
    engines = [e for e, _, _ in ENGINES]
    lines = [
        f"{result['cpu']}, {result['threads']} threads; per-step latency at batch 1, median of {result['rounds']} interleaved "
        f"rounds; quality on {result['samples']} held-out samples on ORT (same noise as fp32); default gate: step error <= "
        f"{b['step_error']}, log-Mel distance <= {b['mel_distance']}, accuracy drop <= {b['accuracy_drop']:.0%}",
        "",
        "| variant | file MB | % of fp32 | worst step error | log-Mel distance | accuracy (fp32) | gate | "
        + " | ".join(f"{e} ms/step" for e in engines)
        + " | best / best float | GMAC/s (best) |",
        "|---|---|---|---|---|---|---|" + "---|" * (len(engines) + 2),
    ]
    for name, r in result["variants"].items():
        m = r.get("measured")
        quality = (
            f"{m['max_step_error']:.4f} | {m['mel_distance']:.3f} | {m['accuracy'] * 100:.0f} % ({m['accuracy_fp32'] * 100:.0f} %)"
            if m
            else "- | - | -"
        )
        gate = "-" if name == "fp32" else ("not measured" if m is None else ("pass" if not r["fails"] else "fail: " + ", ".join(r["fails"])))
        times = " | ".join(f"{r['engines'][e]['step_ms']:.2f}" if e in r["engines"] else "-" for e in engines)
        lines.append(
            f"| {name} | {r['bytes'] / 1e6:.2f} | {r['size_ratio'] * 100:.0f} % | {quality} | {gate} | {times} | "
            f"{r['best_ratio_to_best_float']:.2f} ({r['best_engine']}) | {r['best_gmacs']:.0f} |"
        )
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in result["gemm_peaks_gmacs"].items())
    lines += [
        "",
        f"GEMM peaks in the same run (1024^3, GMAC/s; benchmarks/peaks.py): {peaks}.",
        f"Best float path: {result['best_float']['engine']} fp32 graph, {result['best_float']['step_ms']:.2f} ms/step.",
        "",
        f"verdict: {result['verdict']}",
        "",
        "kernel ms per step by operator type (ORT profiler; top 8):",
        "",
    ]
    for name, ops in result["op_profile"].items():
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(ops.items())[:8])
        lines.append(f"- {name} (total {sum(ops.values()):.2f}): {top}")
    b = result.get("openvino_int8_bound")
    if b:
        lines += [
            "",
            f"OpenVINO {b['precision']} counters (ms per step): the fp32 graph {b['fp32_ms']:.2f}, of which convolutions "
            f"{b['fp32_conv_ms']:.2f}; the all-int8 graph {b['int8_total_ms']:.2f}, of which int8 convolutions {b['int8_conv_ms']:.2f}. "
            f"Bound for any int8 graph here (fp32 step with the convolutions at int8 speed, nothing else changed): "
            f"{b['bound']:.2f}x the fp32 graph on the same engine.",
        ]
    return "\n".join(lines) + "\n"


def latency_only_variant(fp32_file: Path, out_dir: Path, name: str, calib: Path, log) -> Path:
    """The variant's generator graph without the quality run (made once, kept in out_dir)."""
    mode, method = VARIANTS[name]
    path = out_dir / (name.replace(" ", "-") + "-latency-only") / GENERATOR_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        recording = load_recording(calib) if mode in ("int8-static", "mixed") else None
        with tempfile.TemporaryDirectory() as work:
            quantize_generator_file(fp32_file, path, mode, recording, method, Budget().step_error / 2, Path(work), log)
    return path


def verdict(variants: dict, best_float: dict) -> tuple[str, str | None]:
    """(sentence, the fastest passing quantized variant or None)."""
    passing = [n for n, v in variants.items() if n != "fp32" and v["measured"] is not None and not v["fails"]]
    if not passing:
        return "no quantized variant passes the default gate: fp32 stays the shipped precision", None
    best = min(passing, key=lambda n: variants[n]["best_ms"])
    v = variants[best]
    faster = v["best_ms"] < best_float["step_ms"]
    return (
        f"{best} on {v['best_engine']} is the fastest variant that passes the default gate: {v['best_ms']:.2f} ms/step, "
        f"{v['best_ratio_to_best_float']:.2f}x the best float path ({best_float['engine']} fp32), file {v['size_ratio']:.2f}x fp32"
        + ("" if faster else "; it is not faster, so fp32 stays the shipped precision"),
        best if faster else None,
    )


def main() -> None:
    ap = harness.parser(__doc__, "quantization", threads=2, rounds=7, work=True, bundle=True)
    ap.add_argument("--calib", type=Path, default=Path("runs/calib-small"))
    ap.add_argument("--count", type=int, default=10, help="held-out samples per digit for the quality columns")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument(
        "--latency-only",
        nargs="*",
        default=[],
        choices=list(VARIANTS),
        help="variants timed (and sized) without the quality run, for modes too slow to sample 100 x 100 steps",
    )
    args = harness.parse(ap)
    log = lambda msg: print(msg, flush=True)
    if not (args.calib / "calibration.json").is_file():
        record(args.bundle, args.calib, log=log)
    fp32_file = args.bundle / str(read_manifest(args.bundle).generator.file)
    paths, variants = {"fp32": fp32_file}, {"fp32": {"bytes": fp32_file.stat().st_size, "measured": None, "fails": []}}
    for name in args.variants:
        mode, method = VARIANTS[name]
        out = args.out_dir / name.replace(" ", "-")
        manifest = make_variant(args.bundle, out, mode, method, args.calib, args.count, log)
        paths[name] = out / str(manifest.generator.file)
        measured = (manifest.quantization or {})["measured"]
        variants[name] = {
            "bytes": manifest.generator.bytes,
            "measured": measured,
            "fails": passes(measured, Budget()),
            "quantization": {k: v for k, v in (manifest.quantization or {}).items() if k not in ("budget", "measured")},
        }
    for name in args.latency_only:
        paths[name] = latency_only_variant(fp32_file, args.out_dir, name, args.calib, log)
        variants[name] = {"bytes": paths[name].stat().st_size, "measured": None, "fails": ["not measured"]}
    log("latency (interleaved rounds, every variant on every engine)")
    feeds = step_feeds(args.calib, 20)
    lat = latency(paths, feeds, args.threads, args.rounds, log)
    log("GEMM peaks")
    peaks = gemm_peaks(args.threads)
    macs = read_metadata(fp32_file).macs_per_step
    float_engine = min(lat["fp32"], key=lambda e: lat["fp32"][e]["step_ms"])
    best_float = {"engine": float_engine, "step_ms": lat["fp32"][float_engine]["step_ms"]}
    for name, v in variants.items():
        engine = min(lat[name], key=lambda e: lat[name][e]["step_ms"])
        v.update(
            engines=lat[name],
            size_ratio=v["bytes"] / variants["fp32"]["bytes"],
            best_engine=engine,
            best_ms=lat[name][engine]["step_ms"],
            best_ratio_to_best_float=lat[name][engine]["step_ms"] / best_float["step_ms"],
            best_gmacs=macs / lat[name][engine]["step_ms"] / 1e6,
        )
    log("operator profiles")
    profiled = ["fp32"] + [n for n in variants if "int8" in n or "mixed" in n]
    ops = {name: op_profile(paths[name], feeds, args.threads) for name in profiled}
    bound = None
    if "int8-static minmax" in paths and float_engine.startswith("OpenVINO"):
        precision = float_engine.split()[-1]
        log(f"OpenVINO {precision} counters: fp32 and all-int8")
        ov_ops = {name: openvino_kernel_times(paths[name], feeds, args.threads, precision) for name in ("fp32", "int8-static minmax")}
        bound = {
            "precision": precision,
            **int8_bound(ov_ops["fp32"], ov_ops["int8-static minmax"]),
            "ops": {k: {op: round(ms, 3) for op, ms in v.items()} for k, v in ov_ops.items()},
        }
    sentence, best = verdict(variants, best_float)
    result = {
        "command": "python -m c2d.benchmarks.quantization",
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "bundle": str(args.bundle),
        "threads": args.threads,
        "rounds": args.rounds,
        "samples": args.count * 10,
        "default_budget": Budget().__dict__,
        "macs_per_step": macs,
        "gemm_peaks_gmacs": peaks,
        "best_float": best_float,
        "variants": variants,
        "op_profile": ops,
        "openvino_int8_bound": bound,
        "verdict": sentence,
        "recommended": best or "fp32",
    }
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
