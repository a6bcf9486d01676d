"""Training speed on this machine: seconds per optimizer step for each model, in fp32 and bf16 autocast, each with
the default (NCHW) and the channels-last (NHWC, `c2d train --channels-last`) memory format.

All four variants of a model are measured interleaved (one step of each per round) in one run, so that machine noise
hits them alike; the ratios are the figures to read.
python -m c2d.benchmarks.train_speed [--size small] [--batch-size 32] [--steps 6000] [--repeats 8] [--models ...]

The student's steps (`c2d train student`: a guided teacher call and the student's training step) are measured when
--models names them: "student guided (teacher fp32)", "student guided (teacher bf16)" (`--teacher-bf16`; the two differ
only under bf16 autocast) and "student consistency", on the teacher --teacher.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

from c2d.benchmarks.harness import cpu_model, write_results
from c2d.models.data import load_features
from c2d.models.train import make_job
from c2d.runtime.sde import SDEConfig

CLASSIFIER = Path(__file__).resolve().parents[1] / "models" / "checkpoints" / "classifier-small.pt"
TEACHER = CLASSIFIER.parent / "subnet-small-edm-18k.pt"
MODELS = [("classifier", "classifier", True), ("subnet", "subnet", True), ("subnet (no taps)", "subnet", False), ("unet", "unet", True)]
STUDENT_MODELS = {  # name -> (objective, teacher in float32)
    "student guided (teacher fp32)": ("guided", True),
    "student guided (teacher bf16)": ("guided", False),
    "student consistency": ("consistency", True),
}
VARIANTS = {"fp32": (False, False), "fp32 channels-last": (False, True), "bf16": (True, False), "bf16 channels-last": (True, True)}


def one_step(job, optimizer, x, y, gen, bf16: bool, channels_last: bool) -> float:
    """Seconds for one training step (forward, backward, Adam) in the given precision and memory format."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    job.forward_module.to(memory_format=memory_format)
    x = x.contiguous(memory_format=memory_format)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        loss = job.loss(job.forward_module, x, y, gen)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def measure(kind: str, taps: bool, size: str, classifier: str, x, y, repeats: int) -> dict[str, float]:
    return measure_job(make_job(kind, size, SDEConfig(), classifier, gradient_taps=taps), x, y, repeats)


def student_job(name: str, teacher: str):
    from c2d.models.student import DistillConfig, make_student_job

    objective, teacher_fp32 = STUDENT_MODELS[name]
    return make_student_job(teacher, distill=DistillConfig(objective=objective, teacher_fp32=teacher_fp32))


def measure_job(job, x, y, repeats: int) -> dict[str, float]:
    """Median seconds per step of every variant, interleaved over `repeats` rounds after one warm-up round."""
    job.forward_module.train()
    optimizer = torch.optim.Adam([p for p in job.trainable.parameters() if p.requires_grad], lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for round_ in range(repeats + 1):
        for name, (bf16, channels_last) in VARIANTS.items():
            seconds = one_step(job, optimizer, x, y, gen, bf16, channels_last)
            if round_:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def markdown(result: dict) -> str:
    names = list(VARIANTS)
    lines = [
        f"Seconds per training step, batch {result['batch_size']}, {result['threads']} threads, median of {result['repeats']} "
        f"interleaved rounds; {result['cpu']}.",
        "",
        "| model | " + " | ".join(f"s/step {n}" for n in names) + " | channels-last / default (fp32) | bf16 / fp32 | "
        f"hours for {result['steps']} steps (fastest) |",
        "|---|" + "---|" * (len(names) + 3),
    ]
    for model, row in result["rows"].items():
        fastest = min(row.values())
        lines.append(
            f"| {model} | "
            + " | ".join(f"{row[n]:.3f}" for n in names)
            + f" | {row['fp32 channels-last'] / row['fp32']:.2f} | {row['bf16'] / row['fp32']:.2f} | {fastest * result['steps'] / 3600:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6000, help="steps of a full training, for the hours column")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument(
        "--models",
        default=",".join(m for m, _, _ in MODELS),
        help="comma-separated subset of: " + ", ".join([m for m, _, _ in MODELS] + list(STUDENT_MODELS)),
    )
    ap.add_argument("--teacher", default=str(TEACHER), help="the students' teacher (a subnet trained with --precond edm)")
    ap.add_argument("--classifier", default=str(CLASSIFIER), help="frozen classifier for the subnet")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/train_speed.json"))
    args = ap.parse_args()
    data = load_features("train")
    x, y = torch.from_numpy(data.x[: args.batch_size]), torch.from_numpy(data.y[: args.batch_size])
    wanted = set(args.models.split(","))
    if unknown := wanted - {m for m, _, _ in MODELS} - set(STUDENT_MODELS):
        ap.error(f"--models: unknown {', '.join(sorted(unknown))}")
    result = {
        "cpu": cpu_model(),
        "size": args.size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": {},
    }
    for name, kind, taps in MODELS:
        if name in wanted:
            result["rows"][name] = measure(kind, taps, args.size, args.classifier, x, y, args.repeats)
    for name in STUDENT_MODELS:
        if name in wanted:
            result["rows"][name] = measure_job(student_job(name, args.teacher), x, y, args.repeats)
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
