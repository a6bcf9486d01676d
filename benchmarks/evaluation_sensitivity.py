"""Can the audio evaluation see known degradations? Each ladder goes from better to worse by construction; every
measure (per judge: accuracy, FID, KID; DNSMOS OVRL) should move monotonically along it, and its ends should lie
beyond each other's 95 % intervals.

python -m c2d.benchmarks.evaluation_sensitivity [--bundle DIR] [--count 20] [--threads 1] [--out-dir runs/sensitivity]
                                                [--results benchmarks/results/evaluation_sensitivity.json]

Ladders (the recordings are FSDD's 300 test clips; generated sets are --count per digit on seeds 5000 + k):
- noise: the recordings, then with white noise at 20 dB and at 10 dB SNR (power of the recorded part);
- griffin-lim: the recordings' log-Mels through Griffin-Lim at 32, 8 and 2 iterations;
- blur: the recordings' log-Mels blurred in time (Gaussian, sigma 0, 1, 2 frames), through the bundle's vocoder;
- steps: the bundle's generator, ancestral sampler at 100, 25, 8 and 4 steps, as `c2d generate` writes them.
Generated audio is cached in --out-dir, so an interrupted run resumes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cpu_model, write_results
from c2d.models.audio_eval import RATE as RECORDING_RATE
from c2d.models.audio_eval import load_split_audio
from c2d.models.evaluation import (
    default_judges,
    generate_as_users_hear,
    judge_waves,
    load_scored,
    open_dnsmos,
    provenance,
    save_scored,
    scores_table,
    summarise,
)
from c2d.models.scoring import paired_differences
from c2d.runtime.generate import default_bundle

WORSE_IS = {"accuracy": "lower", "fid": "higher", "kid": "higher", "ovrl": "lower"}
STEPS = (100, 25, 8, 4)
SEED = 5000


def add_noise(clips: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White noise at snr_db against each clip's power over its recorded (non-padding) samples."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(clips)
    for i, clip in enumerate(clips):
        active = clip[clip != 0]
        power = float(np.mean(active.astype(np.float64) ** 2)) if active.size else 1e-12
        out[i] = clip + rng.standard_normal(clip.shape).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    return out


def blur_in_time(log_mel: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur along frames [N, n_mels, T] (edge-padded); sigma 0 returns the input."""
    if sigma == 0:
        return log_mel
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(log_mel, [(0, 0), (0, 0), (radius, radius)], mode="edge")
    return np.stack([padded[..., k : k + log_mel.shape[-1]] for k in range(2 * radius + 1)], -1) @ kernel


def generated_audio(out_dir: Path, bundle: Path, steps: int, count: int, threads: int, log) -> tuple[np.ndarray, int, np.ndarray]:
    cache = out_dir / f"ancestral-{steps}-n{count}-s{SEED}.npz"
    if not cache.is_file():
        start = time.time()
        gen, run = generate_as_users_hear(bundle, count, "ancestral", steps, None, SEED, threads=threads)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez_compressed(tmp, audio=run.audio, rate=run.sample_rate, digits=np.array(run.digits))
        tmp.replace(cache)
        log(f"ancestral-{steps}: {len(run.audio)} clips in {time.time() - start:.0f} s")
    data = np.load(cache)
    return data["audio"], int(data["rate"]), data["digits"]


def measure_value(scores: dict, judge: str, measure: str) -> dict:
    return scores["dnsmos"]["ovrl"] if judge == "dnsmos" else scores[judge][measure]


def verdicts(ladders: dict[str, list[str]], rows: dict[str, dict], scored: dict, judges: list[str]) -> list[dict]:
    """Per ladder and measure: monotone along the ladder? ends beyond each other's (separate) intervals? and, since
    every ladder's sets are made from the same clips or seeds, how many adjacent rungs a paired difference resolves
    (its interval excludes 0, on the worse side)."""
    out = []
    measures = [(j, m) for j in judges for m in ("accuracy", "fid", "kid")] + [("dnsmos", "ovrl")]
    for ladder, labels in ladders.items():
        paired = [paired_differences(scored[a], scored[b]) for a, b in zip(labels, labels[1:])]
        for judge, measure in measures:
            if judge == "dnsmos" and "dnsmos" not in rows[labels[0]]:
                continue
            values = [measure_value(rows[label], judge, measure) for label in labels]
            sign = 1 if WORSE_IS[measure] == "higher" else -1
            moves = [sign * (b["value"] - a["value"]) for a, b in zip(values, values[1:])]
            first, last = values[0], values[-1]
            ends_apart = (last["low"] > first["high"]) if sign > 0 else (last["high"] < first["low"])
            diffs = [d[judge][measure] for d in paired]
            resolved = [(e.low > 0) if sign > 0 else (e.high < 0) for e in diffs]
            out.append(
                {
                    "ladder": ladder,
                    "judge": judge,
                    "measure": measure,
                    "monotone": all(m >= 0 for m in moves),
                    "ends_beyond_intervals": bool(ends_apart),
                    "adjacent_resolved": f"{sum(resolved)}/{len(resolved)}",
                    "paired_differences": [e.to_dict() for e in diffs],
                }
            )
    return out


def verdict_table(rows: list[dict]) -> str:
    lines = [
        "| ladder | judge | measure | monotone | ends beyond intervals | adjacent rungs resolved (paired) | paired differences, rung to rung |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        scale = 1000 if r["measure"] == "kid" else (100 if r["measure"] == "accuracy" else 1)
        diffs = "; ".join(f"{scale * d['value']:+.2f} [{scale * d['low']:+.2f}, {scale * d['high']:+.2f}]" for d in r["paired_differences"])
        lines.append(
            f"| {r['ladder']} | {r['judge']} | {r['measure']} | {'yes' if r['monotone'] else 'NO'} | "
            f"{'yes' if r['ends_beyond_intervals'] else 'NO'} | {r['adjacent_resolved']} | {diffs} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = harness.parser(__doc__, "evaluation_sensitivity", threads=1, work=True, bundle=True)
    ap.add_argument("--count", type=int, default=20, help="generated samples per digit")
    args = ap.parse_args()
    bundle = args.bundle or default_bundle()
    judges = default_judges()
    dnsmos = open_dnsmos()
    test_clips, test_digits = load_split_audio("test")  # [300, 8000] as written, at 8 kHz

    from c2d.models.data import load_features
    from c2d.runtime import load
    from c2d.runtime.audio import denormalize
    from c2d.runtime.vocoder import GriffinLim

    gen = load(bundle, "ort")
    test_mels = denormalize(load_features("test").x[:, 0], gen.meta.mel)  # [300, 80, 88] natural-log Mel
    rate = gen.sample_rate
    sets: dict[str, tuple[np.ndarray, int, np.ndarray]] = {}
    sets["recordings"] = (test_clips, RECORDING_RATE, test_digits)
    sets["recordings + noise 20 dB"] = (add_noise(test_clips, 20.0), RECORDING_RATE, test_digits)
    sets["recordings + noise 10 dB"] = (add_noise(test_clips, 10.0), RECORDING_RATE, test_digits)
    for iters in (32, 8, 2):
        sets[f"recorded mels, Griffin-Lim {iters} iterations"] = (GriffinLim(gen.meta.mel, n_iter=iters)(test_mels), rate, test_digits)
    for sigma in (0, 1, 2):
        sets[f"recorded mels blurred sigma {sigma}, {gen.vocoder.name}"] = (gen.vocoder(blur_in_time(test_mels, sigma)), rate, test_digits)
    for steps in STEPS:
        sets[f"generated, ancestral {steps} steps"] = generated_audio(args.out_dir, bundle, steps, args.count, args.threads, print)

    rows, scored = {}, {}
    judged_by = "-".join(j.about["sha256"][:8] for j in judges) + ("-dnsmos" if dnsmos is not None else "")
    for label, (waves, wave_rate, digits) in sets.items():
        cache = args.out_dir / "judged" / f"{re.sub(r'[^a-z0-9]+', '-', label.lower())}-{judged_by}-{len(waves)}.npz"
        if not cache.is_file():  # judging a set takes a minute or two: an interrupted run resumes
            start = time.time()
            save_scored(judge_waves(waves, wave_rate, digits, judges, dnsmos), cache)
            print(f"{label}: judged in {time.time() - start:.0f} s", flush=True)
        scored[label] = load_scored(cache, judges)
        rows[label] = summarise(scored[label])
    ladders = {
        "noise": ["recordings", "recordings + noise 20 dB", "recordings + noise 10 dB"],
        "griffin-lim": [f"recorded mels, Griffin-Lim {i} iterations" for i in (32, 8, 2)],
        "blur": [f"recorded mels blurred sigma {s}, {gen.vocoder.name}" for s in (0, 1, 2)],
        "steps": [f"generated, ancestral {s} steps" for s in STEPS],
    }
    checks = verdicts(ladders, rows, scored, [j.name for j in judges])
    record = {
        "rows": rows,
        "ladders": ladders,
        "verdicts": checks,
        "provenance": provenance(
            command="python -m c2d.benchmarks.evaluation_sensitivity",
            bundle=str(bundle),
            samples_per_digit=args.count,
            seed=SEED,
            cpu=cpu_model(),
            judges={j.name: j.about for j in judges},
            dnsmos=dnsmos is not None,
        ),
    }
    markdown = (
        f"Sensitivity of the audio evaluation ({cpu_model()}); 95 % intervals; KID x 1000.\n\n"
        + scores_table(rows)
        + "\n\n"
        + verdict_table(checks)
        + "\n"
    )
    write_results(args.results, record, markdown)


if __name__ == "__main__":
    main()
