"""Sample quality against steps for every registered sampler, and the real-time factor of the chosen operating points.

python -m c2d.benchmarks.samplers [--bundle DIR] [--sweep-count 10] [--final-count 100] [--final SAMPLER:STEPS ...]
                                  [--out-dir runs/samplers] [--results benchmarks/results/samplers.json]

1. Sweep: every sampler at the step counts of SWEEP (4 to 100), guided at the bundle's gamma, sweep-count samples
   per digit on the same seeds; accuracy, FID and IS by the independent evaluator (Table 1's protocol, fewer samples).
2. Operating points (--final, EM-100 always among them): final-count samples per digit on Table 1's seeds (1000 + k),
   so EM-100 here is Table 1's shipped row; accuracy with its binomial standard error, FID, IS, mIS, AM.
3. Real-time factor of each operating point on the given backend, batch 1, 1 s of audio, sampling + the bundle's
   vocoder, median of interleaved rounds.
This is the log-Mel evaluator's view of the samplers. The bundle's default sampler and steps are chosen on the audio
by benchmarks/default_choice.py (several judges, paired intervals); its row is marked here. Samples are cached in
--out-dir, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from importlib.resources import files
from pathlib import Path

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cached_samples, cpu_model, parse_point, write_results
from c2d.models.data import load_features
from c2d.models.evaluator import Reference, evaluate_samples, generate_normalised, load_evaluator
from c2d.runtime import load
from c2d.runtime.backends import BackendOptions
from c2d.runtime.files import pyplot, save_figure
from c2d.runtime.samplers import SAMPLERS

SWEEP = {  # steps per sampler: the few-step range for the few-step samplers, enough of the rest to show their curve
    "em": (25, 50, 100),
    "ancestral": (4, 6, 10, 15, 25, 50),
    "dpm2m-sde": (4, 6, 10, 15, 25, 50),
    "dpm3m-sde": (4, 6, 10, 15, 25, 50),
    "ddim": (10, 25, 50),
    "dpm2m": (6, 10, 20, 50),
}
TABLE1_SEED = 1000  # Table 1's first seed: EM-100 at --final-count 100 is its shipped row
SWEEP_SEED = 5000  # the sweep's seeds are apart from the operating points'
REFERENCE = ("em", 100)


def samples(out_dir: Path, bundle: Path, sampler: str, steps: int, guidance: float, count: int, seed: int, threads: int, log):
    """count samples per digit (normalised log-Mels, digits), generated once and kept as .npz in out_dir."""
    cache = out_dir / f"{sampler}-{steps}-g{guidance:g}-n{count}-s{seed}.npz"
    return cached_samples(
        cache, lambda: generate_normalised(bundle, count, sampler, steps, guidance, seed, threads=threads), f"{sampler}-{steps}", log
    )


def table1_reference(path: Path) -> dict:
    """EM-100's 1,000-sample quality from Table 1's shipped row: the same checkpoint, sampler and seeds (1000 + k)."""
    row = next(r for r in json.loads(path.read_text())["rows"] if "(shipped)" in r["model"] and "guided" in r["model"])
    m = dict(row["metrics"])
    m["accuracy_se"] = binomial_se(m["accuracy"], m["samples"])
    m["floor_share"] = None  # Table 1 does not record it
    return m


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


def quality(evaluator, reference, x, digits) -> dict:
    m = evaluate_samples(evaluator, x, digits, reference)
    m["accuracy_se"] = binomial_se(m["accuracy"], len(digits))
    m["floor_share"] = float((x < -0.9).mean())  # share of near-silent values (real clips: about 0.66)
    return m


def real_time_factors(bundle: Path, backend: str, threads: int, points: list[tuple[str, int]], rounds: int = 3) -> dict:
    """Sampling + vocoder seconds per second of audio, batch 1, median of interleaved rounds."""
    gen = load(bundle, backend, BackendOptions(threads=threads))
    gen.sample("7", steps=2)  # warm-up
    times = {p: [] for p in points}
    for _ in range(rounds):
        for sampler, steps in points:
            r = gen.sample("7", seed=0, steps=steps, sampler=sampler)
            times[(sampler, steps)].append(r.sampling_seconds + r.vocoder_seconds)
    clip = gen.meta.mel.clip_seconds
    em = statistics.median(times[REFERENCE]) if REFERENCE in times else None
    return {
        f"{s}-{n}": {
            "seconds": statistics.median(v),
            "rtf": statistics.median(v) / clip,
            "speedup_vs_em100": em / statistics.median(v) if em else None,
        }
        for (s, n), v in times.items()
    }


def plot(sweep: dict[str, dict[int, dict]], path: Path) -> None:
    fig, (ax_fid, ax_acc) = pyplot().subplots(1, 2, figsize=(10, 3.8))
    for name, by_steps in sweep.items():
        steps = sorted(by_steps)
        ax_fid.plot(steps, [by_steps[n]["fid"] for n in steps], marker="o", label=name)
        ax_acc.plot(steps, [by_steps[n]["accuracy"] * 100 for n in steps], marker="o", label=name)
    for ax, label in ((ax_fid, "FID (lower is better)"), (ax_acc, "evaluator accuracy, %")):
        ax.set_xscale("log")
        ax.set_xlabel("steps (network evaluations)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_fid.set_yscale("log")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    steps = result["sweep_steps"]
    lines = [
        f"Sweep: {result['sweep_samples']} samples per point (guided, gamma {result['guidance']:g}); FID / accuracy.",
        "",
        "| sampler | " + " | ".join(str(n) for n in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for name, by_steps in result["sweep"].items():
        cells = [f"{by_steps[str(n)]['fid']:.2f} / {by_steps[str(n)]['accuracy'] * 100:.0f} %" if str(n) in by_steps else "-" for n in steps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Operating points: {result['final_samples']} samples each on Table 1's seeds; real-time factor on "
        f"{result['backend']} ({result['threads']} threads, batch 1, sampling + the bundle's vocoder).",
        "",
        "| sampler-steps | accuracy | FID | IS | mIS | AM | near-silent share | RTF | speed-up vs EM-100 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, m in result["final"].items():
        r = result["rtf"].get(key, {})
        lines.append(
            f"| {key}{' (default)' if key == result['bundle_default'] else ''} | {m['accuracy'] * 100:.1f} ± {m['accuracy_se'] * 100:.1f} % | "
            f"{m['fid']:.2f} | {m['is']:.2f} | {m['mis']:.2f} | {m['am']:.3f} | {_share(m['floor_share'])} | "
            f"{r.get('rtf', float('nan')):.3f} | {r.get('speedup_vs_em100') or float('nan'):.1f}x |"
        )
    lines += [
        "",
        f"The bundle's default: {result['bundle_default']} (chosen on the audio by benchmarks/default_choice.py). CPU: " + result["cpu"],
    ] + [f"Note: {n}." for n in result.get("notes", [])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = harness.parser(__doc__, "samplers", threads=2, work=True, bundle=True)
    ap.add_argument("--samplers", nargs="+", default=list(SWEEP), choices=list(SAMPLERS))
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="sweep steps for every sampler [default: SWEEP's per sampler]")
    ap.add_argument("--sweep-count", type=int, default=10, help="samples per digit of each sweep point")
    ap.add_argument("--final-count", type=int, default=100, help="samples per digit of each operating point (Table 1: 100)")
    ap.add_argument("--final", type=parse_point, nargs="*", default=[], help="operating points SAMPLER:STEPS beside EM-100")
    ap.add_argument(
        "--reference-from",
        type=Path,
        default=None,
        help="take EM-100's operating-point quality from this table1.json (its shipped row) instead of sampling it again",
    )
    ap.add_argument("--sweep-only", action="store_true", help="stop after the sweep (its samples stay cached)")
    ap.add_argument("--backend", default="ort")
    args = harness.parse(ap)
    log = lambda msg: print(msg, flush=True)
    gen = load(args.bundle, "ort")
    guidance = gen.meta.default_guidance
    evaluator = load_evaluator(files("c2d.models.checkpoints") / "evaluator.pt")
    reference = Reference.from_features(evaluator, load_features("train"))
    tag = args.out_dir / str(gen.manifest.generator.sha256)[:12]  # a cache per generator file
    sweep = {}
    for sampler in args.samplers:
        sweep[sampler] = {}
        for steps in args.steps or SWEEP.get(sampler, (10, 25, 50)):
            x, digits = samples(tag / "sweep", args.bundle, sampler, steps, guidance, args.sweep_count, SWEEP_SEED, args.threads, log)
            sweep[sampler][steps] = quality(evaluator, reference, x, digits)
            log(f"sweep {sampler}-{steps}: FID {sweep[sampler][steps]['fid']:.2f}, accuracy {sweep[sampler][steps]['accuracy']:.2f}")
    if args.sweep_only:
        return
    points = [REFERENCE] + [p for p in args.final if p != REFERENCE]
    final, notes = {}, []
    if args.reference_from:
        final["em-100"] = table1_reference(args.reference_from)
        notes.append(f"em-100's quality is Table 1's shipped row ({args.reference_from}: the same checkpoint, seeds and sampler)")
    for sampler, steps in points:
        if f"{sampler}-{steps}" in final:
            continue
        x, digits = samples(tag / "final", args.bundle, sampler, steps, guidance, args.final_count, TABLE1_SEED, args.threads, log)
        final[f"{sampler}-{steps}"] = quality(evaluator, reference, x, digits)
        log(f"final {sampler}-{steps}: {final[f'{sampler}-{steps}']}")
    rtf = real_time_factors(args.bundle, args.backend, args.threads, points)
    command = " ".join(
        [
            "python -m c2d.benchmarks.samplers",
            *(f"--final {s}:{n}" for s, n in points[1:]),
            *([f"--reference-from {args.reference_from}"] if args.reference_from else []),
        ]
    )
    result = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "bundle": str(args.bundle),
        "generator_sha256": gen.manifest.generator.sha256,
        "guidance": guidance,
        "backend": args.backend,
        "threads": args.threads,
        "sweep_steps": sorted({n for v in sweep.values() for n in v}),
        "sweep_samples": args.sweep_count * len(gen.meta.labels),
        "final_samples": args.final_count * len(gen.meta.labels),
        "sweep": {s: {str(n): m for n, m in v.items()} for s, v in sweep.items()},
        "final": final,
        "rtf": rtf,
        "bundle_default": f"{gen.meta.default_sampler}-{gen.meta.default_steps}",
        "notes": notes,
    }
    plot(sweep, args.results.with_suffix(".png"))
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
