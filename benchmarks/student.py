"""The few-step student against its teacher and the shipped default, on one backend and the same seeds: speed at
batch 1 and batch 8, and quality of the audio as `c2d generate` writes it.

python -m c2d.benchmarks.student --student DIR --teacher DIR [--shipped DIR] [--student-steps 1 2 4]
                                 [--student-sampler consistency] [--student-guidance G ...] [--count 30] [--rounds 5] [--threads 1] [--speed-only]
                                 [--out-dir runs/student] [--results benchmarks/results/student.json]

Rows: the student at each of --student-steps (with --student-sampler: multistep consistency sampling, or any sampler
for a stage-1 student, which is a guided denoiser) and --student-guidance (the guidance scale is the student's input;
default: its bundle's), its teacher at the paper's EM-100 and
at the teacher bundle's default, and the shipped bundle at its default (what `c2d generate` runs today).
Speed: ONNX Runtime fp32 on the CPU with --threads threads. Every round makes one generate call (sampling and vocoder)
of every row at batch 1, then at batch 8, interleaved so that a noisy machine slows every row alike; figures are
medians over rounds. ms per step = sampling time / steps; GMAC per step is the bundle's (one graph call, batch 1).
Quality: --count clips per digit on seeds 1000 + k (Table 1's), the two judges' accuracy, FID and KID and DNSMOS OVRL
(models/evaluation.py); every row's difference to the teacher's EM-100 and to the shipped default, with paired-
bootstrap 95 % intervals on the same seeds (as benchmarks/default_choice.py). Audio is cached per generator file in
--out-dir, so an interrupted run resumes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from c2d.benchmarks import harness
from c2d.benchmarks.harness import AUDIO_SEED, cpu_model, difference_to, point_audio, write_results
from c2d.runtime.backends import BackendOptions
from c2d.runtime.generate import Generator, default_bundle, load
from c2d.runtime.samplers import SAMPLERS

EM_100 = ("em", 100)
BATCHES = (1, 8)
SPEED_DIGIT = 7


@dataclass(frozen=True)
class Row:
    label: str
    bundle: Path
    sampler: str
    steps: int
    guidance: float | None = None  # None: the bundle's default


def bundle_default(bundle: Path) -> tuple[str, int]:
    meta = load(bundle, "ort").meta
    return meta.default_sampler, meta.default_steps


def rows_for(
    student: Path,
    teacher: Path,
    shipped: Path | None,
    student_steps: list[int],
    student_guidance: list[float] | None = None,
    student_sampler: str = "consistency",
) -> list[Row]:
    """The benchmark's rows in table order; the teacher's default is left out where it is EM-100 itself."""
    scales: list[float | None] = list(student_guidance) if student_guidance else [None]
    rows = [
        Row(f"student {student_sampler}-{n}" + ("" if g is None else f" g{g:g}"), student, student_sampler, n, g)
        for g in scales
        for n in student_steps
    ]
    rows.append(Row("teacher em-100", teacher, *EM_100))
    default = bundle_default(teacher)
    if default != EM_100:
        rows.append(Row(f"teacher {default[0]}-{default[1]} (its default)", teacher, *default))
    if shipped is not None:
        point = bundle_default(shipped)
        rows.append(Row("shipped {}-{} (the default today)".format(*point), shipped, *point))
    return rows


def speed(rows: list[Row], rounds: int, threads: int, batches=BATCHES) -> dict[str, dict]:
    """Per row and batch size: median end-to-end ms of one generate call, ms per step, vocoder ms, real-time factor,
    GMAC per step; generate calls interleaved across rows in every round."""
    options = BackendOptions(threads=threads)
    generators: dict[Path, Generator] = {}
    for row in rows:
        generators.setdefault(row.bundle, load(row.bundle, "ort", options))
    result: dict[str, dict] = {row.label: {"steps": row.steps, "gmac_per_step": generators[row.bundle].meta.macs_per_step / 1e9} for row in rows}
    for batch in batches:
        runs: dict[str, list] = {row.label: [] for row in rows}
        for r in range(rounds + 1):  # round 0 warms every session up and is not counted
            for row in rows:
                gen = generators[row.bundle].sample(
                    SPEED_DIGIT, batch, seed=r * batch, sampler=row.sampler, steps=row.steps, guidance=row.guidance, batch_size=batch
                )
                if r:
                    runs[row.label].append(gen)
        for row in rows:
            done = runs[row.label]
            sampling = statistics.median(g.sampling_seconds for g in done)
            total = statistics.median(g.sampling_seconds + g.vocoder_seconds for g in done)
            result[row.label][f"batch{batch}"] = {
                "end_to_end_ms": 1e3 * total,
                "ms_per_step": 1e3 * sampling / row.steps,
                "vocoder_ms": 1e3 * statistics.median(g.vocoder_seconds for g in done),
                "real_time_factor": statistics.median(g.real_time_factor for g in done),
            }
    reference = next(row.label for row in rows if (row.sampler, row.steps) == EM_100)
    for batch in batches:
        ref_ms = result[reference][f"batch{batch}"]["end_to_end_ms"]
        for label in result:
            result[label][f"batch{batch}"]["speedup_vs_em100"] = ref_ms / result[label][f"batch{batch}"]["end_to_end_ms"]
    return result


def quality(rows: list[Row], count: int, out_dir: Path, threads: int) -> dict[str, dict]:
    """Per row: scores, and differences to the teacher's EM-100 and to the shipped default (paired, same seeds)."""
    from c2d.models.evaluation import default_judges, judge_waves, open_dnsmos

    judges, dnsmos = default_judges(), open_dnsmos()
    scored = {}
    for row in rows:
        audio, rate, digits, _ = point_audio(out_dir, row.bundle, (row.sampler, row.steps), count, threads, row.guidance)
        scored[row.label] = judge_waves(audio, rate, digits, judges, dnsmos)
    return compare(rows, scored)


def compare(rows: list[Row], scored: dict) -> dict[str, dict]:
    """Scores of every row's ScoredSet, with its difference to the teacher's EM-100 (within_em100: no measure worse
    beyond its interval) and to the shipped default (not_worse_than_shipped)."""
    from c2d.models.evaluation import summarise

    reference = next(row.label for row in rows if (row.sampler, row.steps) == EM_100)
    shipped = next((row.label for row in rows if row.label.startswith("shipped")), None)
    result = {}
    for row in rows:
        entry: dict = {"scores": summarise(scored[row.label])}
        if row.label != reference:
            entry["vs_em100"], entry["within_em100"] = difference_to(scored[reference], scored[row.label])
        if shipped is not None and row.label != shipped:
            entry["vs_shipped"], entry["not_worse_than_shipped"] = difference_to(scored[shipped], scored[row.label])
        result[row.label] = entry
    return result


def _interval(d: dict, scale: float = 1.0, digits: int = 2) -> str:
    return f"{scale * d['value']:+.{digits}f} [{scale * d['low']:+.{digits}f}, {scale * d['high']:+.{digits}f}]"


def speed_lines(result: dict) -> list[str]:
    header = ["row", "NFE", "GMAC/step"]
    for b in BATCHES:
        header += [f"batch {b}: ms/step", f"batch {b}: end to end ms", f"batch {b}: x faster than EM-100"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in result["speed"].items():
        cells = [label, str(row["steps"]), f"{row['gmac_per_step']:.3f}"]
        for b in BATCHES:
            s = row[f"batch{b}"]
            cells += [f"{s['ms_per_step']:.1f}", f"{s['end_to_end_ms']:.0f}", f"{s['speedup_vs_em100']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def quality_lines(result: dict, against: str, title: str) -> list[str]:
    """One row per configuration: its scores, and its difference to `against` ("vs_em100" or "vs_shipped")."""
    first = next(iter(result["quality"].values()))["scores"]
    judges = [j for j, v in first.items() if isinstance(v, dict) and j != "dnsmos"]
    header = ["row"] + [f"{j} {m}" for j in judges for m in ("accuracy", "FID", "KID x1000")] + ["DNSMOS OVRL", title]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    verdict = {"vs_em100": "within_em100", "vs_shipped": "not_worse_than_shipped"}[against]
    for label, row in result["quality"].items():
        s, d = row["scores"], row.get(against)
        cells = [label]
        for j in judges:
            for m, scale, fmt in (("accuracy", 100, "{:.1f} %"), ("fid", 1, "{:.2f}"), ("kid", 1000, "{:.1f}")):
                text = fmt.format(scale * s[j][m]["value"])
                cells.append(text + (f" ({_interval(d[j][m], scale)})" if d else ""))
        ov = s.get("dnsmos", {}).get("ovrl")
        text = f"{ov['value']:.2f}" if ov else "-"
        if d and "dnsmos" in d:
            text += f" ({_interval(d['dnsmos']['ovrl'], 1, 3)})"
        cells += [text, "reference" if d is None else ("yes" if row[verdict] else "no")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    lines = [
        f"Student benchmark ({result['cpu']}; {result['date']}): ORT fp32 on the CPU, {result['threads']} thread(s), "
        f"median of {result['rounds']} interleaved rounds; one generate call = sampling + vocoder of `batch` clips.",
        "",
        *speed_lines(result),
    ]
    if result.get("quality"):
        n = result["samples"]
        lines += [
            "",
            f"Quality: {n} clips per row, seeds {AUDIO_SEED} + k, the same for every row; difference = row - reference, "
            "paired-bootstrap 95 % intervals; a row is within when no interval lies wholly on the worse side.",
            "",
            *quality_lines(result, "vs_em100", "within the teacher's EM-100"),
        ]
        if any("vs_shipped" in r for r in result["quality"].values()):
            lines += ["", "Against the shipped default:", "", *quality_lines(result, "vs_shipped", "not worse than the shipped default")]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = harness.parser(__doc__, "student", threads=1, rounds=5, work=True)
    ap.add_argument("--student", type=Path, required=True, help="The student bundle.")
    ap.add_argument("--teacher", type=Path, required=True, help="The bundle of the teacher it was distilled from.")
    ap.add_argument("--shipped", type=Path, default=None, help="[default: the bundle shipped in the package]")
    ap.add_argument("--student-steps", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--student-sampler", default="consistency", choices=sorted(SAMPLERS), help="the student rows' sampler")
    ap.add_argument("--student-guidance", type=float, nargs="+", default=None, help="[default: the student bundle's]")
    ap.add_argument("--count", type=int, default=30, help="clips per digit of every row (quality)")
    ap.add_argument("--speed-only", action="store_true", help="Skip the quality measures.")
    args = ap.parse_args()
    rows = rows_for(args.student, args.teacher, args.shipped or default_bundle(), args.student_steps, args.student_guidance, args.student_sampler)
    result = {
        "rows": [{"label": r.label, "bundle": str(r.bundle), "sampler": r.sampler, "steps": r.steps, "guidance": r.guidance} for r in rows],
        "threads": args.threads,
        "rounds": args.rounds,
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "speed": speed(rows, args.rounds, args.threads),
    }
    if not args.speed_only:
        result["quality"] = quality(rows, args.count, args.out_dir, args.threads)
        result["samples"] = 10 * args.count
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
