"""Reference samples from trained generators (PyTorch sampler), one per digit and seed, saved as .npz.

Also reports how the generator's own noise-conditioned classifier labels the samples at t = t_min: a quick,
biased sanity check (the independent evaluation classifier is the real measure).

python -m c2d.benchmarks.reference_samples --subnet S.pt [--unet U.pt --classifier C.pt] -o samples.npz
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from c2d.models.checkpoint import build_classifier, build_single_backbone, build_unet, load_checkpoint, sde_from
from c2d.models.classifier import own_classifier_accuracy
from c2d.models.sampling import reference_sample
from c2d.models.unet import TwoModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subnet", action="append", default=[], help="subnet checkpoint (repeatable)")
    ap.add_argument("--unet")
    ap.add_argument("--classifier", help="classifier that guides the U-Net")
    ap.add_argument("--seeds", type=int, default=2, help="samples per digit")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--gamma", type=float, default=3.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()
    digits = [d for d in range(10) for _ in range(args.seeds)]
    seeds = list(range(len(digits)))
    models = {}
    for path in args.subnet:
        models[path] = build_single_backbone(load_checkpoint(path, "subnet"), path)
    if args.unet:
        cls_ckpt = load_checkpoint(args.classifier, "classifier")
        unet_ckpt = load_checkpoint(args.unet, "unet")
        models[args.unet] = TwoModel(build_unet(unet_ckpt, args.unet), build_classifier(cls_ckpt), sde_from(unet_ckpt))
    arrays, report = {"digits": np.array(digits)}, {}
    for name, model in models.items():
        model.to(args.device)
        start = time.time()
        x0 = reference_sample(model, model.sde, seeds, digits, args.gamma, args.steps, device=args.device)
        arrays[name.replace("/", "_")] = x0
        report[name] = {
            "seconds": round(time.time() - start, 2),
            "own_classifier_accuracy": own_classifier_accuracy(model.classifier, x0, digits, model.sde.t_min, args.device),
            "mean": float(x0.mean()),
            "std": float(x0.std()),
        }
    np.savez_compressed(args.out, **arrays)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
