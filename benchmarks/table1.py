"""The paper's Table 1 on our data, for the committed `small` checkpoints, in one run.

python -m c2d.benchmarks.table1 [--count 100] [--only BUNDLE ...] [--out-dir runs/table1] [--results benchmarks/results/table1.json]

Rows: U-Net and score subnet (with and without gradient taps, 4,000 steps each: the equal-budget ablation),
unconditional (gamma 0) and guided (gamma 3), on the first classifier (classifier-small.pt); the shipped generator
(models.checkpoints.SHIPPED_SUBNET, the same subnet trained to 18,000 steps), guided, with the paper's sampler and
with the shipped bundle's default sampler (read from runtime/bundles/small when its row is reached); the EDM subnet on
the trained-on classifier (not shipped), guided. Columns: the classifier each row stands on, parameters total [trainable] and GMACs per step
(models/costs.py), FID / IS / mIS / AM and class accuracy by the independent evaluator (models/evaluator.py) on
count x 10 samples per row (reverse-SDE EM, 100 steps, but for the default-sampler row; exported bundles on ONNX
Runtime CPU), per-step latency and peak memory of each graph (`c2d profile` in a fresh process per measurement,
bundles interleaved, median of rounds).
--only BUNDLE re-measures the quality of that bundle's rows and keeps every other row's from --results (each row
records the date it was measured); latency and memory are always measured again, for every graph.
Generated samples are cached in --out-dir by checkpoint hash, sampler, steps and count, so an interrupted run resumes.
A row of real test-split clips gives the metrics' floor.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cached_samples, cpu_model, write_results
from c2d.export.exporter import export_bundle
from c2d.models.checkpoints import SHIPPED_SUBNET
from c2d.models.costs import cost_table
from c2d.models.data import load_features
from c2d.models.evaluator import Reference, evaluate_samples, generate_normalised, load_evaluator
from c2d.runtime import load
from c2d.runtime.bundle import file_sha256, read_manifest
from c2d.runtime.contract import GENERATOR_FILE
from c2d.runtime.generate import default_bundle

CKPT = files("c2d.models.checkpoints")
EDM_SUBNET = "subnet-small-edm-18k.pt"  # EDM output scaling on the trained-on classifier: not shipped (docs/samplers.md)
BUNDLES = {
    "single": ["subnet-small.pt"],
    "notaps": ["subnet-small-notaps.pt"],
    "two-model": ["unet-small.pt", "classifier-small.pt"],
    "shipped": [SHIPPED_SUBNET],
    "shipped-default": [SHIPPED_SUBNET],  # the same generator: its default-sampler row can be re-measured alone
    "edm-18k": [EDM_SUBNET],
}
SAME_GRAPH = {"shipped": "single", "shipped-default": "single"}  # longer-trained weights, same graph: profiled once
FIRST_CLASSIFIER = "classifier-small.pt (2,985 steps)"
CLASSIFIER = {"edm-18k": "classifier-small-long.pt (5,247 steps)"}  # every other bundle stands on FIRST_CLASSIFIER
SHIPPED_ROW, TWO_MODEL_ROW, SINGLE_ROW = "Score subnet 18k steps (shipped), guided", "U-Net + Classifier, guided", "Score subnet, guided"
DEFAULT_ROW = "... the shipped bundle's default sampler"
EDM_ROW = "Score subnet 18k steps, EDM output (not shipped), guided"
EM100 = ("em", 100)  # the paper's sampler: every row but DEFAULT_ROW
BUNDLE_DEFAULT = None  # DEFAULT_ROW's sampling: the shipped bundle's default, read when the row is reached
ROWS = [  # (row name, as in models/costs.py unless COST_ROW says otherwise; bundle; guidance; sampler and steps)
    ("U-Net, unconditional", "two-model", 0.0, EM100),
    ("Score subnet, unconditional", "single", 0.0, EM100),
    ("... without gradient taps", "notaps", 0.0, EM100),
    (TWO_MODEL_ROW, "two-model", 3.0, EM100),
    (SINGLE_ROW, "single", 3.0, EM100),
    ("... without gradient taps, guided", "notaps", 3.0, EM100),
    (SHIPPED_ROW, "shipped", 3.0, EM100),
    (DEFAULT_ROW, "shipped-default", 3.0, BUNDLE_DEFAULT),
    (EDM_ROW, "edm-18k", 3.0, EM100),
]
COST_ROW = {row: SINGLE_ROW for row, bundle, *_ in ROWS if bundle in ("shipped", "shipped-default", "edm-18k")}


def export_all(out_dir: Path) -> dict[str, Path]:
    """Every bundle of BUNDLES exported into out_dir/bundles, again where the checkpoints changed since."""
    paths = {}
    for name, ckpts in BUNDLES.items():
        path = out_dir / "bundles" / name
        if not current_export(path, [CKPT / c for c in ckpts]):
            export_bundle([str(CKPT / c) for c in ckpts], path, vocoder="griffin-lim")
        paths[name] = path
    return paths


def current_export(bundle: Path, checkpoints: list) -> bool:
    """Whether bundle's generator was exported from exactly these checkpoint files (its vocoder's aside)."""
    try:
        entries = read_manifest(bundle, verify=False).checkpoints
        recorded = {entry["sha256"] for role, entry in entries.items() if role != "vocoder"}  # the generator's sources
    except Exception:
        return False
    return recorded == {file_sha256(c) for c in checkpoints}


def shipped_default() -> tuple[str, int]:
    """(sampler, steps) that `c2d generate` runs by default: the shipped bundle's, which must hold SHIPPED_SUBNET."""
    bundle = default_bundle()
    if not current_export(bundle, [CKPT / SHIPPED_SUBNET]):
        raise SystemExit(f"{bundle} was not exported from {SHIPPED_SUBNET}: re-export it (docs/checkpoints.md)")
    meta = load(bundle, "ort").meta
    return meta.default_sampler, meta.default_steps


def samples_for(
    bundle: Path, guidance: float, sampling: tuple[str, int], count: int, out_dir: Path, log, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    sources = "-".join(sorted(e["sha256"][:12] for e in read_manifest(bundle, verify=False).checkpoints.values()))
    cache = out_dir / "samples" / f"{sources}-g{guidance:g}-{sampling[0]}-{sampling[1]}-n{count}.npz"
    label = f"{bundle.name} gamma {guidance:g} {sampling[0]}-{sampling[1]}"
    return cached_samples(cache, lambda: generate_normalised(bundle, count, *sampling, guidance, seed=1000, threads=threads), label, log)


def profile_once(bundle: Path, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.json"
        subprocess.run(
            [sys.executable, "-m", "c2d", "profile", str(bundle), "--steps", str(steps), "--json", str(out)],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.read_text())


def latency_and_memory(bundles: dict[str, Path], rounds: int = 3, steps: int = 40) -> dict[str, dict]:
    runs = {name: [] for name in bundles}
    for _ in range(rounds):  # interleaved: every bundle sees the same machine state
        for name, path in bundles.items():
            runs[name].append(profile_once(path, steps))
    return {
        name: {
            "step_ms": statistics.median(r["step_ms"]["median"] for r in rs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
            "generator_mb": rs[0]["file_bytes"][GENERATOR_FILE] / 1e6,
        }
        for name, rs in runs.items()
    }


def markdown(result: dict) -> str:
    lines = [
        f"`{result['command']}` ({result.get('cpu', 'CPU not recorded')}, {result['date']}); {result['samples_per_row']} samples per row.",
        "",
        "| model | classifier | sampler | params total [trainable] | GMACs/step | FID | IS | mIS | AM | accuracy "
        "| ORT ms/step | peak MB | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        m, p = r["metrics"], r["profile"]
        acc = f"{m['accuracy'] * 100:.1f} %" if "accuracy" in m else "-"
        lines.append(
            f"| {r['model']} | {r.get('classifier', FIRST_CLASSIFIER)} | {r['sampler']} | {r['params_total'] / 1e6:.2f} M "
            f"[{r['params_trainable'] / 1e6:.2f}] | {r['gmacs_per_step']:.3f} | {m['fid']:.2f} | {m['is']:.2f} | {m['mis']:.1f} | "
            f"{m['am']:.3f} | {acc} | {p['step_ms']:.1f} | {p['peak_rss_mb']:.0f} | {r.get('measured', result['date'])} |"
        )
    real = result["real_test_split"]
    lines.append(
        f"| real test clips ({real['samples']}) | - | - | - | - | {real['fid']:.2f} | {real['is']:.2f} | {real['mis']:.1f} | "
        f"{real['am']:.3f} | {real['accuracy'] * 100:.1f} % | - | - | {result['date']} |"
    )
    r = result["ratios_single_over_two_model_guided"]
    lines += ["", "single backbone / two-model (guided): " + ", ".join(f"{k} {v:.2f}" for k, v in r.items())]
    t = result["shipped_model_targets"]
    lines += [
        "",
        f"shipped model as `c2d generate` runs it ({DEFAULT_ROW}, gamma 3) against the default-model targets: evaluator accuracy "
        f"{t['accuracy'] * 100:.1f} % (target >= {t['accuracy_target'] * 100:.0f} %: {'met' if t['accuracy_met'] else 'NOT met'}); "
        f"FID / U-Net + Classifier FID {t['fid_ratio']:.2f} (target <= {t['fid_ratio_target']}: {'met' if t['fid_ratio_met'] else 'NOT met'})",
    ]
    return "\n".join(lines) + "\n"


TARGET_ACCURACY, TARGET_FID_RATIO = 0.90, 1.5  # the default-model issue's quality targets for the shipped generator


def shipped_model_targets(single_guided: dict, two_model_guided: dict) -> dict:
    acc, ratio = single_guided["metrics"]["accuracy"], single_guided["metrics"]["fid"] / two_model_guided["metrics"]["fid"]
    return {
        "accuracy": acc,
        "accuracy_target": TARGET_ACCURACY,
        "accuracy_met": acc >= TARGET_ACCURACY,
        "fid_ratio": ratio,
        "fid_ratio_target": TARGET_FID_RATIO,
        "fid_ratio_met": ratio <= TARGET_FID_RATIO,
    }


def previous_quality(results: Path, only: list[str], count: int) -> dict[str, dict]:
    """Row name -> the row as --results last recorded it, for every row whose bundle is not re-measured (--only)."""
    if not only:
        return {}
    if not results.is_file():
        raise SystemExit(f"--only keeps the other rows from {results}, which does not exist: run without --only")
    previous = json.loads(results.read_text())
    if previous["samples_per_row"] != count * 10:
        raise SystemExit(f"{results} has {previous['samples_per_row']} samples per row, not {count * 10}: run with the same --count")
    kept = {r["model"]: r for r in previous["rows"] if r["bundle"] not in only}
    missing = [row for row, bundle, *_ in ROWS if bundle not in only and row not in kept]
    if missing:
        raise SystemExit(f"{results} has no row {', '.join(map(repr, missing))}: re-measure its bundle with --only, or run without")
    return kept


def measure_quality(bundles: dict[str, Path], kept: dict[str, dict], count: int, out_dir: Path, log, threads: int) -> dict[str, dict]:
    """Row name -> {metrics, sampler, measured} for every row of ROWS: kept rows as they were, the others generated."""
    evaluator = load_evaluator(CKPT / "evaluator.pt")
    reference = Reference.from_features(evaluator, load_features("train"))
    quality = {}
    for row, bundle, gamma, sampling in ROWS:
        if row in kept:
            old = kept[row]
            quality[row] = {"metrics": old["metrics"], "sampler": old["sampler"], "measured": old.get("measured", "2026-11-27")}
            continue
        sampling = sampling or shipped_default()
        x, digits = samples_for(bundles[bundle], gamma, sampling, count, out_dir, log, threads)
        metrics = evaluate_samples(evaluator, x, digits if gamma > 0 else None, reference)
        quality[row] = {"metrics": metrics, "sampler": f"{sampling[0]}-{sampling[1]}", "measured": time.strftime("%Y-%m-%d")}
        log(f"{row}: {metrics}")
    return quality


def main() -> None:
    ap = harness.parser(__doc__, "table1", threads=2)  # engine threads of the sample generation (profiles: c2d profile's own)
    ap.add_argument("--count", type=int, default=100, help="samples per digit and row (headline: 100, i.e. 1,000 per row)")
    ap.add_argument("--only", nargs="+", choices=list(BUNDLES), default=[], help="re-measure only these bundles' rows")
    ap.add_argument("--out-dir", type=Path, default=Path("runs/table1"))
    ap.add_argument("--profile-steps", type=int, default=40)
    args = ap.parse_args()
    log = lambda msg: print(msg, flush=True)
    kept = previous_quality(args.results, args.only, args.count)
    bundles = export_all(args.out_dir)
    quality = measure_quality(bundles, kept, args.count, args.out_dir, log, args.threads)
    log("profiling (fresh process per measurement, interleaved)")
    prof = latency_and_memory({name: path for name, path in bundles.items() if name not in SAME_GRAPH}, steps=args.profile_steps)
    costs = {c.model: c for c in cost_table("small")}
    cost = lambda row: costs[COST_ROW.get(row, row)]
    rows = [
        {
            "model": row,
            "bundle": bundle,
            "classifier": CLASSIFIER.get(bundle, FIRST_CLASSIFIER),
            "guidance": gamma,
            "params_total": cost(row).params_total,
            "params_trainable": cost(row).params_trainable,
            "gmacs_per_step": cost(row).macs_per_step / 1e9,
            **quality[row],
            "profile": prof[SAME_GRAPH.get(bundle, bundle)],
        }
        for row, bundle, gamma, _ in ROWS
    ]
    by_name = {r["model"]: r for r in rows}
    one, two = by_name[SINGLE_ROW], by_name[TWO_MODEL_ROW]
    result = {
        "command": " ".join(["python -m c2d.benchmarks.table1 --count", str(args.count)] + (["--only", *args.only] if args.only else [])),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "sampler": f"em, 100 steps (the last row: the shipped bundle's default, {by_name[DEFAULT_ROW]['sampler']})",
        "samples_per_row": args.count * 10,
        "rows": rows,
        "real_test_split": real_test_split(),
        "ratios_single_over_two_model_guided": {
            "params": one["params_total"] / two["params_total"],
            "MACs": one["gmacs_per_step"] / two["gmacs_per_step"],
            "latency": one["profile"]["step_ms"] / two["profile"]["step_ms"],
            "peak memory": one["profile"]["peak_rss_mb"] / two["profile"]["peak_rss_mb"],
        },
        "shipped_model_targets": shipped_model_targets(by_name[DEFAULT_ROW], two),
        "note": "unconditional rows run the same exported graph as their guided row with gamma 0, and the shipped rows the "
        "same graph as the 4,000-step subnet, so they share its latency; the EDM subnet's graph adds its output scaling",
    }
    write_results(args.results, result, markdown(result))


def real_test_split() -> dict:
    evaluator = load_evaluator(CKPT / "evaluator.pt")
    test = load_features("test")
    return evaluate_samples(evaluator, test.x, test.y, Reference.from_features(evaluator, load_features("train")))


if __name__ == "__main__":
    main()
