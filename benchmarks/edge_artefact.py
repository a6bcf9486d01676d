"""How often a generator writes a burst into the top Mel bands of the first frame (the "first-frame artefact").

python -m c2d.benchmarks.edge_artefact [--bundle B ...] [--count 50] [--sampler S --steps N] [--threads 1]

For every clip, the edge excess is the mean natural-log Mel of the top 16 of 80 bands in frame 0, minus the median
over frames of the same mean: a burst at the start stands out, a word that starts loud in the low bands does not.
A clip has the artefact when its excess is above the 99.5th percentile of FSDD's 300 test recordings (the same
measure on real clips, so about 0.5 % of real clips count by construction). The rate comes with its Wilson 95 %
interval; every bundle samples the same digits and seeds (its default sampler unless --sampler is given).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from c2d.benchmarks import harness
from c2d.runtime.audio import denormalize
from c2d.runtime.backends import BackendOptions
from c2d.runtime.generate import Generator

TOP_BANDS = 16
REAL_QUANTILE = 99.5
LOUD_NATS = (1.0, 2.0)  # fixed thresholds beside the real clips' quantile: bursts that are loud, not only unusual


def edge_excess(log_mel: np.ndarray) -> np.ndarray:
    """[N, n_mels, T] natural-log Mels -> [N]: top-band level of frame 0 above the clip's median frame."""
    top = log_mel[:, -TOP_BANDS:, :].mean(axis=1)  # [N, T]
    return top[:, 0] - np.median(top, axis=1)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def real_excess() -> np.ndarray:
    from c2d.models.data import load_features

    test = load_features("test")
    return edge_excess(denormalize(test.x[:, 0]))


def generated_excess(bundle: Path, count: int, sampler: str | None, steps: int | None, threads: int) -> tuple[np.ndarray, str, int]:
    gen = Generator(bundle, "ort", BackendOptions(threads=threads))
    sampler, steps = gen.sampler_and_steps(sampler, steps)
    result = gen.sample(list(range(10)), count, 1000, steps, sampler, batch_size=50, vocode=False)
    return edge_excess(result.log_mel), sampler, steps


def rates(excess: np.ndarray, threshold: float) -> dict:
    return {
        "n": len(excess),
        "rate": float((excess > threshold).mean()),
        "loud": {str(t): float((excess > t).mean()) for t in LOUD_NATS},
        "median_excess": float(np.median(excess)),
    }


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, "edge_artefact", threads=1)
    ap.add_argument("--bundle", type=Path, nargs="+", default=None, help="[default: the shipped bundle]")
    ap.add_argument("--count", type=int, default=50, help="samples per digit")
    ap.add_argument("--sampler", default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)  # not harness.parse: --bundle takes several, and its default is filled in below
    from c2d.runtime.generate import default_bundle

    real = real_excess()
    threshold = float(np.percentile(real, REAL_QUANTILE))
    rows = [{"bundle": "FSDD test recordings", **rates(real, threshold)}]
    for bundle in args.bundle or [default_bundle()]:
        excess, sampler, steps = generated_excess(bundle, args.count, args.sampler, args.steps, args.threads)
        rows.append({"bundle": str(bundle), "sampler": sampler, "steps": steps, **rates(excess, threshold)})
    for r in rows:
        r["interval_95"] = list(wilson(round(r["rate"] * r["n"]), r["n"]))
    harness.write_results(args.results, {"threshold": threshold, "rows": rows}, table(rows, threshold))


def table(rows: list[dict], threshold: float) -> str:
    loud_head = " | ".join(f"excess > {t:g} nat" for t in LOUD_NATS)
    lines = [
        f"First-frame top-band excess above the 99.5th percentile of real test clips ({threshold:.2f} nats):",
        "",
        f"| clips | sampler | n | with the artefact [95 % interval] | {loud_head} | median excess (nats) |",
        "|---|---|---|---|" + "---|" * len(LOUD_NATS) + "---|",
    ]
    for r in rows:
        low, high = r["interval_95"]
        what = f"{r.get('sampler', '-')} {r.get('steps', '')}".strip()
        loud = " | ".join(f"{r['loud'][str(t)] * 100:.1f} %" for t in LOUD_NATS)
        rate = f"{r['rate'] * 100:.1f} % [{low * 100:.1f}, {high * 100:.1f}]"
        lines.append(f"| {r['bundle']} | {what} | {r['n']} | {rate} | {loud} | {r['median_excess']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
