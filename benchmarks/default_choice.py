"""Choose a bundle's default sampler and steps by what the user hears: the fewest network evaluations whose audio is
not worse than EM-100's (the paper's sampler) on any measure, compared pair by pair on the same seeds.

python -m c2d.benchmarks.default_choice [--bundle DIR] [--points SAMPLER:STEPS ...] [--count 100] [--threads 1]
                                        [--against BUNDLE:SAMPLER:STEPS] [--reference SAMPLER:STEPS] [--guidance G]
                                        [--out-dir runs/default_choice] [--results benchmarks/results/default_choice.json]

Every point and EM-100 generate --count samples per digit on seeds 1000 + k (Table 1's), as `c2d generate` writes them
(the bundle's vocoder, -1 dBFS, 16-bit). Measures (models/evaluation.py): per judge (MFCC ResNet, log-Mel TDNN)
accuracy, FID and KID against FSDD's training recordings; DNSMOS OVRL. Each point's difference to EM-100 has a
paired-bootstrap 95 % interval (the same items drawn for both); a point passes when no difference lies wholly on the
worse side. --against names a yardstick from another bundle (say the previously shipped one at a sampler its users
liked): the chosen point is compared with it the same way, on the same seeds. Audio is cached per generator file in
--out-dir, so an interrupted run resumes. --reference replaces EM-100 (for a quick look at one point against a
yardstick, name that point: nothing else is generated); --guidance sets the bundle's points' guidance scale (the
yardstick keeps its bundle's default).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from c2d.benchmarks import harness
from c2d.benchmarks.harness import AUDIO_SEED as SEED
from c2d.benchmarks.harness import cpu_model, difference_to, parse_point, point_audio, write_results
from c2d.models.evaluation import default_judges, judge_waves, open_dnsmos, provenance, summarise
from c2d.models.scoring import ScoredSet
from c2d.runtime.bundle import generator_sha256
from c2d.runtime.generate import default_bundle

REFERENCE = ("em", 100)


def parse_against(text: str) -> tuple[Path, tuple[str, int]]:
    bundle, _, point = text.rpartition(":")
    bundle, _, sampler = bundle.rpartition(":")
    if not bundle or not Path(bundle).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: want BUNDLE:SAMPLER:STEPS with BUNDLE a bundle folder")
    return Path(bundle), parse_point(f"{sampler}:{point}")


def markdown(result: dict) -> str:
    judges = list(result["judges"])
    lines = [
        f"Default choice: {result['samples']} clips per point, seeds {SEED} + k, paired against {result['reference']} "
        f"({result['cpu']}; {result['date']}). 95 % intervals; KID x 1000; difference = point - reference."
        + (f" The bundle's points at guidance {result['guidance']:g}." if result.get("guidance") is not None else ""),
        "",
    ]
    header = ["point", "NFE"] + [f"{j} {m}" for j in judges for m in ("accuracy", "FID", "KID")] + ["DNSMOS OVRL", "not worse than reference"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, row in result["points"].items():
        s, d = row["scores"], row.get("difference")
        cells = [key, str(row["nfe"])]
        for j in judges:
            for m, scale, pct in (("accuracy", 100, True), ("fid", 1, False), ("kid", 1000, False)):
                e = s[j][m]
                text = f"{scale * e['value']:.1f}{' %' if pct else ''}" if pct else f"{scale * e['value']:.2f}"
                if d:
                    de = d[j][m]
                    text += f" ({scale * de['value']:+.2f} [{scale * de['low']:+.2f}, {scale * de['high']:+.2f}])"
                cells.append(text)
        ov = s.get("dnsmos", {}).get("ovrl")
        text = f"{ov['value']:.2f}" if ov else "-"
        if d and "dnsmos" in d:
            de = d["dnsmos"]["ovrl"]
            text += f" ({de['value']:+.3f} [{de['low']:+.3f}, {de['high']:+.3f}])"
        cells += [text, "reference" if d is None else ("yes" if row["passes"] else "no")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Chosen: {result['chosen'] or 'none (no point passes)'}: the fewest network evaluations not worse than "
        f"{result['reference']}{' or than the yardstick' if result.get('against') else ''} on any measure.",
    ]
    if result.get("against"):
        lines += ["", *against_lines(result, judges)]
    return "\n".join(lines) + "\n"


def against_lines(result: dict, judges: list[str]) -> list[str]:
    """Every point against the --against yardstick of another bundle: one row each."""
    label = result["against"]["label"]
    lines = [f"Against the yardstick {label} (difference = point - yardstick, 95 % paired intervals):", ""]
    header = ["point"] + [f"{j} {m}" for j in judges for m in ("accuracy", "FID", "KID")] + ["DNSMOS OVRL", "not worse than yardstick"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, row in result["points"].items():
        d = row["against_difference"]
        cells = [key]
        for j in judges:
            for m, scale in (("accuracy", 100), ("fid", 1), ("kid", 1000)):
                cells.append(f"{scale * d[j][m]['value']:+.2f} [{scale * d[j][m]['low']:+.2f}, {scale * d[j][m]['high']:+.2f}]")
        ov = d.get("dnsmos", {}).get("ovrl")
        cells += [f"{ov['value']:+.3f} [{ov['low']:+.3f}, {ov['high']:+.3f}]" if ov else "-", "yes" if row["passes_against"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def choose(points: dict) -> str | None:
    """The point with the fewest network evaluations that is not worse than the reference (and the yardstick, where
    there is one) on any measure; None if there is none."""
    passing = [k for k, r in points.items() if r.get("passes") and r.get("passes_against", True)]
    return min(passing, key=lambda k: (points[k]["nfe"], k)) if passing else None


def yardstick(args, judges, dnsmos) -> tuple[str, ScoredSet, dict]:
    """(label, scored clips, summary) of the --against point, generated from its own bundle on the same seeds."""
    other, point = args.against
    audio, rate, digits, _ = point_audio(args.out_dir, other, point, args.count, args.threads)  # at its own default guidance
    scored = judge_waves(audio, rate, digits, judges, dnsmos)
    return f"{other}:{point[0]}:{point[1]}", scored, {"generator_sha256": generator_sha256(other), "scores": summarise(scored)}


def main() -> None:
    ap = harness.parser(__doc__, "default_choice", threads=1, work=True, bundle=True)
    ap.add_argument("--points", type=parse_point, nargs="+", default=[("ancestral", 8), ("ancestral", 15), ("ancestral", 25)])
    ap.add_argument("--count", type=int, default=100, help="samples per digit of every point")
    ap.add_argument("--against", type=parse_against, default=None, help="BUNDLE:SAMPLER:STEPS to compare the chosen point with")
    ap.add_argument("--reference", type=parse_point, default=REFERENCE, help="SAMPLER:STEPS every point is compared with [em:100]")
    ap.add_argument("--guidance", type=float, default=None, help="guidance scale of the bundle's points [the bundle's default]")
    args = ap.parse_args()
    bundle = args.bundle or default_bundle()
    judges, dnsmos = default_judges(), open_dnsmos()
    reference = args.reference
    ref_key = f"{reference[0]}-{reference[1]}"
    scored, points = {}, {}
    for point in [reference] + [p for p in args.points if p != reference]:
        audio, rate, digits, seconds = point_audio(args.out_dir, bundle, point, args.count, args.threads, args.guidance)
        key = f"{point[0]}-{point[1]}"
        scored[key] = judge_waves(audio, rate, digits, judges, dnsmos)
        points[key] = {"nfe": point[1], "scores": summarise(scored[key]), "generation_seconds": seconds}
    for key, row in points.items():
        if key != ref_key:
            row["difference"], row["passes"] = difference_to(scored[ref_key], scored[key])
    against = None
    if args.against:
        label, yard, against = yardstick(args, judges, dnsmos)
        against["label"] = label
        for key, row in points.items():
            row["against_difference"], row["passes_against"] = difference_to(yard, scored[key])
    chosen = choose(points)
    command = " ".join(
        ["python -m c2d.benchmarks.default_choice", "--points", *(f"{s}:{n}" for s, n in args.points), "--count", str(args.count)]
        + (["--bundle", str(args.bundle)] if args.bundle else [])
        + (["--against", against["label"]] if against else [])
        + (["--reference", f"{reference[0]}:{reference[1]}"] if reference != REFERENCE else [])
        + (["--guidance", f"{args.guidance:g}"] if args.guidance is not None else [])
    )
    result = {
        "points": points,
        "reference": ref_key,
        "guidance": args.guidance,
        "chosen": chosen,
        "samples": 10 * args.count,
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "judges": {j.name: j.about for j in judges},
        "against": against,
        "provenance": provenance(
            command=command,
            bundle=str(bundle),
            generator_sha256=generator_sha256(bundle),
            seed=SEED,
            samples_per_digit=args.count,
            guidance=args.guidance,
            dnsmos=dnsmos is not None,
        ),
    }
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
