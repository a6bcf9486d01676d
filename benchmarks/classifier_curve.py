"""The classifier's accuracy on noisy test inputs against training steps, from its training log.

python -m c2d.benchmarks.classifier_curve LOG [--checkpoint CKPT] [--results benchmarks/results/classifier_curve.json]

LOG is the `<out>.log` that `c2d train classifier` writes: every checkpoint it records the EMA weights' accuracy on
FSDD's 300 test clips at t = 0, 0.25, 0.5, 0.75 and 1 (two fixed noise draws per clip, seed 1234). A run started with
--init-from counts its steps on from the source's (recorded in CKPT, the run's checkpoint); the source itself is
measured here with the same draws and becomes the curve's first point. Writes the JSON, a Markdown table beside it
and a PNG.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cpu_model, write_results
from c2d.models.checkpoint import build_classifier, load_checkpoint, sde_from
from c2d.models.classifier import NOISY_TIMES, noisy_accuracy
from c2d.models.data import load_features

DRAWS = 2  # as the training monitor (models/train.classifier_monitor)


def read_curve(log: Path) -> list[dict]:
    rows = []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "accuracy" in record:
            rows.append(
                {"step": record["step"], "accuracy": {float(k): v for k, v in record["accuracy"].items()}, "elapsed_s": record.get("elapsed_s")}
            )
    return rows


def source_point(ckpt: dict) -> dict | None:
    """The --init-from source's accuracy with the monitor's draws, if the run started from one that is at hand."""
    from c2d.models.checkpoints import shipped_checkpoint

    init = ckpt.get("init_from")
    if not init:
        return None
    path = Path(str(shipped_checkpoint(init["file"])))
    if not path.is_file():
        return None
    test = load_features("test")
    src = load_checkpoint(path, "classifier")
    acc = noisy_accuracy(build_classifier(src, str(path)), torch.from_numpy(test.x), torch.from_numpy(test.y), sde_from(src), draws=DRAWS)
    return {"step": 0, "accuracy": acc, "source": init["file"]}


def main() -> None:
    ap = harness.parser(__doc__, "classifier_curve")
    ap.add_argument("log", type=Path)
    ap.add_argument("--checkpoint", type=Path, help="the run's checkpoint (for --init-from runs: where steps start)")
    args = ap.parse_args()
    rows = read_curve(args.log)
    ckpt = load_checkpoint(args.checkpoint, "classifier") if args.checkpoint else {}
    offset, batch = 0, ckpt.get("train", {}).get("batch_size")
    start = source_point(ckpt) if ckpt else None
    if ckpt.get("init_from"):
        offset = ckpt["init_from"]["step"]
    if start is not None:
        rows = [start] + rows
    for r in rows:
        r["total_steps"] = r["step"] + offset
    header = "| steps (batch " + str(batch or "?") + ") | " + " | ".join(f"t={t:g}" for t in NOISY_TIMES) + " |"
    lines = [
        f"Classifier accuracy on the 300 FSDD test clips against training steps ({DRAWS} noise draws per clip and t; {cpu_model()}).",
        "",
        header,
        "|---|" + "---|" * len(NOISY_TIMES),
    ]
    for r in rows:
        label = f"{r['total_steps']:,}" + (f" ({r['source']})" if "source" in r else "")
        lines.append(f"| {label} | " + " | ".join(f"{100 * r['accuracy'][t]:.1f} %" for t in NOISY_TIMES) + " |")
    result = {
        "rows": [{**r, "accuracy": {str(k): v for k, v in r["accuracy"].items()}} for r in rows],
        "log": str(args.log),
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "cpu": cpu_model(),
        "command": "python -m c2d.benchmarks.classifier_curve "
        + " ".join([str(args.log)] + (["--checkpoint", str(args.checkpoint)] if args.checkpoint else [])),
    }
    write_results(args.results, result, "\n".join(lines) + "\n")
    plot(rows, args.results.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    from c2d.runtime.files import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for t in NOISY_TIMES:
        ax.plot([r["total_steps"] for r in rows], [100 * r["accuracy"][t] for r in rows], marker=".", label=f"t={t:g}")
    ax.set_xlabel("training steps")
    ax.set_ylabel("test accuracy [%]")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
