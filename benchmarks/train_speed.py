"""Training speed on this machine: seconds per optimizer step for each model, bf16 autocast against fp32.

Measured interleaved (bf16 step, fp32 step, ...) in one run so that machine noise hits both alike.
python -m c2d.benchmarks.train_speed [--size small] [--batch-size 32] [--steps 6000] [--repeats 8]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch

from c2d.models.train import make_job
from c2d.runtime.sde import SDEConfig
from c2d.models.data import load_features

CLASSIFIER = Path(__file__).resolve().parents[1] / "models" / "checkpoints" / "classifier-small.pt"


def one_step(job, optimizer, x, y, gen, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        loss = job.loss(job.forward_module, x, y, gen)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6000, help="steps of a full training, for the hours column")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--classifier", default=str(CLASSIFIER), help="frozen classifier for the subnet")
    ap.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = ap.parse_args()
    data = load_features("train")
    x, y = torch.from_numpy(data.x[: args.batch_size]), torch.from_numpy(data.y[: args.batch_size])
    rows = {}
    for name, kind, taps in [("classifier", "classifier", True), ("subnet", "subnet", True),
                             ("subnet, no taps", "subnet", False), ("unet", "unet", True)]:
        job = make_job(kind, args.size, SDEConfig(), args.classifier, gradient_taps=taps)
        job.forward_module.train()
        optimizer = torch.optim.Adam([p for p in job.trainable.parameters() if p.requires_grad], lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        for bf16 in (True, False):  # warm-up
            one_step(job, optimizer, x, y, gen, bf16)
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for bf16 in (True, False):
                times[bf16].append(one_step(job, optimizer, x, y, gen, bf16))
        bf, fp = statistics.median(times[True]), statistics.median(times[False])
        rows[name] = {"bf16_s": bf, "fp32_s": fp, "bf16_over_fp32": bf / fp, "hours_for_steps_bf16": bf * args.steps / 3600}
    meta = {"size": args.size, "batch_size": args.batch_size, "steps": args.steps, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "torch": torch.__version__}
    lines = [f"| model | s/step bf16 | s/step fp32 | bf16/fp32 | hours for {args.steps} steps (bf16) |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {r['bf16_s']:.3f} | {r['fp32_s']:.3f} | {r['bf16_over_fp32']:.2f} | {r['hours_for_steps_bf16']:.2f} |" for n, r in rows.items()]
    print(json.dumps(meta))
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
