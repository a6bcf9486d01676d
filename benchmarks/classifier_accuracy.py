"""Noise-conditioned classifier accuracy on the FSDD test split at several diffusion times.

python -m c2d.benchmarks.classifier_accuracy CKPT [CKPT ...] [--features F] [--device cpu|cuda] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from c2d.models.checkpoint import build_classifier, load_checkpoint, sde_from
from c2d.models.data import load_features
from c2d.models.sde import perturb

TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def accuracy_by_time(classifier, x0: torch.Tensor, y: torch.Tensor, sde, times=TIMES, seed: int = 1234,
                     batch: int = 100) -> dict[float, float]:
    """Fraction of test clips classified correctly from x_t, one fixed noise draw per clip and time."""
    classifier.eval()
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    result = {}
    for t_val in times:
        correct = 0
        for i in range(0, len(x0), batch):
            xb = x0[i : i + batch]
            t = torch.full((len(xb),), t_val, device=x0.device)
            x_t = perturb(xb, t, sde, torch.randn(xb.shape, generator=gen, device=x0.device))
            correct += (classifier(x_t, t).argmax(1) == y[i : i + batch]).sum().item()
        result[t_val] = correct / len(x0)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--features", help="precomputed features .npz (default: the FSDD folder)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    test = load_features("test", features_file=args.features)
    x0, y = torch.from_numpy(test.x).to(args.device), torch.from_numpy(test.y).to(args.device)
    rows = {}
    for path in args.checkpoints:
        ckpt = load_checkpoint(path, "classifier")
        model = build_classifier(ckpt, path).to(args.device)
        rows[path] = {"size": ckpt.get("size"), "step": ckpt.get("step"), "accuracy": accuracy_by_time(model, x0, y, sde_from(ckpt))}
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
