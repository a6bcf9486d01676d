"""The paper's Table 1 cost columns (parameters, GMACs per sampling step) for every named size.

python -m c2d.benchmarks.costs [--out benchmarks/results/costs.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from c2d.models.costs import cost_table, format_cost_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["small", "paper"])
    ap.add_argument("--out", default="benchmarks/results/costs.md")
    args = ap.parse_args()
    parts = ["# Cost columns of Table 1 (batch 1, one 1-second 80 x 88 log-Mel input, MACs counted like THOP)", ""]
    for size in args.sizes:
        parts += [f"## size `{size}`", "", format_cost_table(cost_table(size)), ""]
    parts.append("Command: `python -m c2d.benchmarks.costs`")
    text = "\n".join(parts) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
