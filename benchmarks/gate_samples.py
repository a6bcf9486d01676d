"""How many samples the deployment gate needs: the worst-step error of each reduced-precision candidate, with its 95 %
bootstrap interval, at 1 to 5 samples per digit (the same reference run, its first k samples per digit).

python -m c2d.benchmarks.gate_samples [--bundle B] [--threads 1] [--max-count 5]

`c2d profile --backend all` passes a candidate only if the upper end of this interval is within the budget (0.05), so
the interval must be narrow enough that a candidate well inside the budget is not failed by the luck of a few samples,
and a candidate near it is not passed by it. The table shows where that holds.
"""

from __future__ import annotations

import numpy as np

from c2d.benchmarks import harness
from c2d.runtime.backends import BackendOptions, BackendUnavailable
from c2d.runtime.deployment import Candidate
from c2d.runtime.gate import Budget, backend_eps, bootstrap_interval, reference_run, replay_sample_errors, worst_step_error
from c2d.runtime.generate import Generator

CANDIDATES = (Candidate("openvino", "bf16"), Candidate("openvino", "f32"))


def per_sample_errors(bundle, threads: int, count: int) -> tuple[dict[str, np.ndarray], list[int]]:
    """{label: [calls, samples]} relative eps errors of each candidate against ORT fp32 on one reference run, and the
    digit of each sample."""
    ref = Generator(bundle, "ort", BackendOptions(threads=threads))
    run = reference_run(ref, Budget(count=count))
    out = {}
    for cand in CANDIDATES:
        try:
            gen = Generator(bundle, cand.backend, cand.options(threads))
        except (BackendUnavailable, ImportError) as exc:
            print(f"{cand.label}: skipped ({exc})")
            continue
        out[cand.label] = replay_sample_errors(run.eps, backend_eps(gen.model), run.calls)
    return out, list(run.generation.digits)


def first_per_digit(digits: list[int], k: int) -> np.ndarray:
    """Indices of the first k samples of every digit."""
    seen: dict[int, int] = {}
    keep = []
    for i, d in enumerate(digits):
        if seen.get(d, 0) < k:
            keep.append(i)
            seen[d] = seen.get(d, 0) + 1
    return np.array(keep)


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, "gate_samples", threads=1, bundle=True)
    ap.add_argument("--max-count", type=int, default=5)
    args = harness.parse(ap, argv)
    errors, digits = per_sample_errors(args.bundle, args.threads, args.max_count)
    budget = Budget().step_error
    rows = []
    for label, e in errors.items():
        for k in range(1, args.max_count + 1):
            sub = e[:, first_per_digit(digits, k)]
            low, high = bootstrap_interval(sub, worst_step_error)
            rows.append({"candidate": label, "samples": sub.shape[1], "worst_step_error": worst_step_error(sub), "interval_95": [low, high]})
    lines = ["| candidate | samples | worst-step error | 95 % interval | decision at budget 0.05 |", "|---|---|---|---|---|"]
    for r in rows:
        low, high = r["interval_95"]
        decision = "pass" if high <= budget else ("fail" if low > budget else "undecided: fails by interval")
        lines.append(f"| {r['candidate']} | {r['samples']} | {r['worst_step_error']:.4f} | {low:.4f} to {high:.4f} | {decision} |")
    harness.write_results(args.results, {"rows": rows, "budget": budget}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
