"""The paper's low-data and zero-shot guidance (issue 18): subnets trained on a subset of the data, with the full
frozen classifier guiding them, measured per digit.

python -m c2d.benchmarks.low_data [--count 100] [--gammas 0,3,6,10] [--subnet NAME=CHECKPOINT ...]
                                   [--out-dir runs/low_data] [--results benchmarks/results/low_data.json]

Each subnet (default: the full-data reference `subnet-small.pt` and the three ablations in models/checkpoints/) is
exported to a bundle and sampled with the deployed sampler (the bundle's default, on ONNX Runtime CPU) at each
guidance scale, `count` samples per digit from the same seeds. The independent evaluator (models/evaluator.py)
classifies every sample: per digit, the share classified as the digit asked for (accuracy) and the FID of that
digit's samples against the real training clips of that digit. Digits the subnet was trained on ("seen", from the
checkpoint's `train_subset`) and the others ("unseen") are averaged apart. Samples are cached in --out-dir, so an
interrupted run resumes. Writes JSON, Markdown and a per-digit PNG chart.
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

import numpy as np

from c2d.benchmarks.harness import cached_samples, cpu_model, write_results
from c2d.export.exporter import export_bundle
from c2d.models.checkpoint import load_checkpoint
from c2d.models.data import describe_subset, load_features
from c2d.models.evaluator import classify, frechet_distance, generate_normalised, load_evaluator
from c2d.runtime.contract import MANIFEST_FILE

CKPT = files("c2d.models.checkpoints")
SUBNETS = {
    "full data": "subnet-small.pt",
    "3 % of the data": "subnet-small-frac3.pt",
    "digits 3, 5, 7": "subnet-small-digits357.pt",
    "digit 4": "subnet-small-digit4.pt",
}
N_DIGITS = 10


def seen_digits(subset: dict | None) -> list[int]:
    """The digits a subnet trained on, from its checkpoint's `train_subset` (None: the whole training split)."""
    digits = (subset or {}).get("digits")
    return list(range(N_DIGITS)) if digits is None else [int(d) for d in digits]


def per_digit_metrics(evaluator, x: np.ndarray, digits: np.ndarray, real_emb: dict[int, np.ndarray]) -> dict:
    probs, emb = classify(evaluator, x)
    predicted = probs.argmax(1)
    out = {}
    for d in range(N_DIGITS):
        mask = digits == d
        out[str(d)] = {
            "accuracy": float((predicted[mask] == d).mean()),
            "fid": frechet_distance(emb[mask], real_emb[d]),
            "predicted": np.bincount(predicted[mask], minlength=N_DIGITS).tolist(),
        }
    return out


def summarise(per_digit: dict, seen: list[int]) -> dict:
    unseen = [d for d in range(N_DIGITS) if d not in seen]

    def mean(key, ds):
        return float(np.mean([per_digit[str(d)][key] for d in ds])) if ds else None

    return {
        "accuracy_seen": mean("accuracy", seen),
        "accuracy_unseen": mean("accuracy", unseen),
        "fid_seen": mean("fid", seen),
        "fid_unseen": mean("fid", unseen),
        "accuracy_all": mean("accuracy", range(N_DIGITS)),
    }


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown(result: dict) -> str:
    lines = [
        f"Deployed sampler {result['sampler']}, {result['count']} samples per digit, evaluator accuracy per digit "
        f"(FID per digit against that digit's real training clips); {result['cpu']}.",
        "",
        "| subnet | trained on | gamma | accuracy seen | accuracy unseen | FID seen | FID unseen | per-digit accuracy 0-9 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, sub in result["subnets"].items():
        for gamma, row in sub["gammas"].items():
            s = row["summary"]
            digits = " ".join(f"{'*' if int(d) not in sub['seen'] else ''}{100 * m['accuracy']:.0f}" for d, m in row["per_digit"].items())
            lines.append(
                f"| {name} | {sub['trained_on']} | {gamma} | {_pct(s['accuracy_seen'])} | {_pct(s['accuracy_unseen'])} | "
                f"{_num(s['fid_seen'])} | {_num(s['fid_unseen'])} | {digits} |"
            )
    lines += [
        "",
        "Per-digit accuracy in %; * marks a digit the subnet never saw in training. With 100 samples a digit, one "
        "standard error of an accuracy is at most 5 points.",
        "",
    ] + unseen_table(result)
    return "\n".join(lines) + "\n"


def unseen_table(result: dict) -> list[str]:
    """Markdown rows: for every digit a subnet never saw, how often each gamma produced it, the best gamma, and the
    full-data reference's accuracy on that digit at the same gamma (when the reference is in the result)."""
    reference = next((sub for sub in result["subnets"].values() if not sub["subset"]), None)
    gammas = [f"{g:g}" for g in result["gammas"]]
    rows = []
    for name, sub in result["subnets"].items():
        for d in (d for d in range(N_DIGITS) if d not in sub["seen"]):
            acc = {g: sub["gammas"][g]["per_digit"][str(d)]["accuracy"] for g in gammas}
            best = max(gammas, key=lambda g: acc[g])
            ref = "-" if reference is None else _pct(reference["gammas"][best]["per_digit"][str(d)]["accuracy"])
            rows.append(f"| {name} | {d} | " + " | ".join(_pct(acc[g]) for g in gammas) + f" | {best} | {ref} |")
    if not rows:
        return []
    unguided = [
        f"- {name}: at gamma 0, {_pct(seen_share(sub['gammas']['0'], sub['seen']))} of all samples are labelled one of its "
        f"training digits ({', '.join(map(str, sub['seen']))})"
        for name, sub in result["subnets"].items()
        if len(sub["seen"]) < N_DIGITS and "0" in sub["gammas"]
    ]
    return (
        [
            "How often guidance produces each unseen digit (evaluator accuracy on the samples asked for that digit):",
            "",
            "| subnet | unseen digit | " + " | ".join(f"gamma {g}" for g in gammas) + " | best gamma | full data, same gamma |",
            "|---|---|" + "---|" * (len(gammas) + 2),
        ]
        + rows
        + [""]
        + unguided
    )


def seen_share(row: dict, seen: list[int]) -> float:
    """Share of all the samples of one gamma (every digit asked for) that the evaluator labels a seen digit."""
    predicted = np.sum([m["predicted"] for m in row["per_digit"].values()], axis=0)
    return float(predicted[seen].sum() / predicted.sum())


def plot(result: dict, path: Path) -> None:
    from c2d.runtime.files import pyplot, save_figure

    names = list(result["subnets"])
    fig, axes = pyplot().subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        sub = result["subnets"][name]
        for d in range(N_DIGITS):
            if d not in sub["seen"]:
                ax.axvspan(d - 0.5, d + 0.5, color="0.92")
        for gamma, row in sub["gammas"].items():
            ax.plot(range(N_DIGITS), [100 * row["per_digit"][str(d)]["accuracy"] for d in range(N_DIGITS)], marker="o", label=f"gamma {gamma}")
        ax.set_title(f"{name}\n(grey: never seen in training)", fontsize=9)
        ax.set_xticks(range(N_DIGITS))
        ax.set_xlabel("digit asked for")
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("evaluator accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100, help="samples per digit and guidance scale")
    ap.add_argument("--gammas", default="0,3,6,10", help="guidance scales (the bundle default is 3)")
    ap.add_argument("--subnet", action="append", default=[], metavar="NAME=CHECKPOINT", help="replace the default set (repeatable)")
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out-dir", type=Path, default=Path("runs/low_data"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/low_data.json"))
    args = ap.parse_args()
    subnets = dict(s.split("=", 1) for s in args.subnet) if args.subnet else {n: str(CKPT / f) for n, f in SUBNETS.items()}
    gammas = [float(g) for g in args.gammas.split(",")]
    evaluator = load_evaluator(CKPT / "evaluator.pt")
    train = load_features("train")
    _, real = classify(evaluator, train.x)
    real_emb = {d: real[train.y == d] for d in range(N_DIGITS)}
    result = {"cpu": cpu_model(), "count": args.count, "seed": args.seed, "gammas": gammas, "subnets": {}}
    for name, checkpoint in subnets.items():
        bundle = args.out_dir / "bundles" / Path(checkpoint).stem
        if not (bundle / MANIFEST_FILE).is_file():
            export_bundle([checkpoint], bundle, vocoder="griffin-lim", log=print)
        subset = load_checkpoint(checkpoint, "subnet").get("train_subset")
        seen = seen_digits(subset)
        sub = {"checkpoint": str(checkpoint), "seen": seen, "subset": subset, "trained_on": describe_subset(subset), "gammas": {}}
        for gamma in gammas:
            x, digits = cached_samples(
                args.out_dir / "samples" / f"{Path(checkpoint).stem}-g{gamma:g}-n{args.count}-s{args.seed}.npz",
                lambda bundle=bundle, gamma=gamma: generate_normalised(bundle, args.count, None, None, gamma, args.seed, threads=args.threads),
                f"{name}, gamma {gamma:g}",
                print,
            )
            per_digit = per_digit_metrics(evaluator, x, digits, real_emb)
            sub["gammas"][f"{gamma:g}"] = {"per_digit": per_digit, "summary": summarise(per_digit, seen)}
        result["subnets"][name] = sub
        from c2d.runtime.generate import Generator

        result["sampler"] = "{} {}".format(*Generator(bundle).sampler_and_steps())
    write_results(args.results, result, markdown(result))
    plot(result, args.results.with_suffix(".png"))


if __name__ == "__main__":
    main()
