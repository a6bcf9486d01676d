"""Noise-conditioned classifier accuracy on the FSDD test split at several diffusion times.

python -m c2d.benchmarks.classifier_accuracy CKPT [CKPT ...] [--features F] [--device cpu|cuda] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from c2d.models.checkpoint import build_classifier, load_checkpoint, sde_from
from c2d.models.classifier import NOISY_TIMES, noisy_accuracy
from c2d.models.data import load_features

TIMES = NOISY_TIMES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--features", help="precomputed features .npz (default: the FSDD folder)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--draws", type=int, default=1, help="noise draws per clip and time (1: the figures committed so far)")
    args = ap.parse_args()
    test = load_features("test", features_file=args.features)
    x0, y = torch.from_numpy(test.x).to(args.device), torch.from_numpy(test.y).to(args.device)
    rows = {}
    for path in args.checkpoints:
        ckpt = load_checkpoint(path, "classifier")
        model = build_classifier(ckpt, path).to(args.device)
        rows[path] = {"size": ckpt.get("size"), "step": ckpt.get("step"), "accuracy": noisy_accuracy(model, x0, y, sde_from(ckpt), draws=args.draws)}
    print("| checkpoint | size | steps | " + " | ".join(f"t={t:g}" for t in TIMES) + " |")
    print("|---|---|---|" + "---|" * len(TIMES))
    for path, row in rows.items():
        accs = " | ".join(f"{100 * row['accuracy'][t]:.1f} %" for t in TIMES)
        print(f"| {Path(path).name} | {row['size']} | {row['step']} | {accs} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
