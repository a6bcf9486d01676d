"""This CPU's practical GEMM rates per engine and precision: the peaks that a generator step's GMAC/s is read against.

python -m c2d.benchmarks.peaks [--threads 1 2] [--n 1024]

One n x n x n product with a constant weight (as a layer has), batch of n rows, timed on each engine: ORT fp32,
OpenVINO f32 and bf16 (its inference precision hint), and int8 as a QDQ graph (activations uint8, weights int8
per tensor; ORT fuses it into an integer MatMul, OpenVINO runs it as an int8 FullyConnected). The best of `calls`
timed runs, in GMAC/s.
"""

from __future__ import annotations

import argparse

from c2d.benchmarks.harness import cpu_model
from c2d.runtime.peaks import GEMMS, gemm_model, gemm_peaks

__all__ = ["GEMMS", "gemm_model", "gemm_peaks"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n", type=int, default=1024)
    args = ap.parse_args()
    print(f"GEMM {args.n}^3, GMAC/s; {cpu_model()}")
    for threads in args.threads:
        peaks = gemm_peaks(threads, args.n)
        print(f"{threads} thread(s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))


if __name__ == "__main__":
    main()
