"""This CPU's practical GEMM rates per engine and precision: the peaks that a generator step's GMAC/s is read against.

python -m c2d.benchmarks.peaks [--threads 1 2] [--n 1024]   # -> benchmarks/results/peaks.{json,md}

One n x n x n product with a constant weight (as a layer has), batch of n rows, timed on each engine: ORT fp32,
OpenVINO f32 and bf16 (its inference precision hint), and int8 as a QDQ graph (activations uint8, weights int8
per tensor; ORT fuses it into an integer MatMul, OpenVINO runs it as an int8 FullyConnected). The best of `calls`
timed runs, in GMAC/s.
"""

from __future__ import annotations

from c2d.benchmarks import harness
from c2d.runtime.peaks import GEMMS, PROFILE_N, gemm_model, gemm_peaks

__all__ = ["GEMMS", "gemm_model", "gemm_peaks"]


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, "peaks")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n", type=int, default=PROFILE_N)
    args = harness.parse(ap, argv)
    rows = {threads: gemm_peaks(threads, args.n) for threads in args.threads}
    labels = list(GEMMS)
    lines = [f"GEMM {args.n}^3 with a constant weight, GMAC/s (best of 20 calls):", "", "| threads | " + " | ".join(labels) + " |"]
    lines.append("|---|" + "---|" * len(labels))
    lines += [f"| {t} | " + " | ".join(f"{peaks[k]:.0f}" if k in peaks else "-" for k in labels) + " |" for t, peaks in rows.items()]
    harness.write_results(args.results, {"n": args.n, "gmacs_per_s": {str(t): p for t, p in rows.items()}}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
