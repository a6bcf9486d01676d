"""The `c2d` command. Subcommands import torch only when they need it, so the runtime stays slim."""
from __future__ import annotations

import click

SIZE_NAMES = ("tiny", "small", "paper")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """c2d: class-conditional spoken-digit generation with a single classifier backbone."""


@main.command()
@click.argument("kind", type=click.Choice(["classifier", "subnet", "unet"]))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write (resumed if it exists).")
@click.option("--size", type=click.Choice(SIZE_NAMES), default="small", show_default=True, help="Named model size.")
@click.option("--classifier", "classifier_path", type=click.Path(dir_okay=False), help="Frozen classifier checkpoint (subnet only).")
@click.option("--no-gradient-taps", is_flag=True, help="Subnet ablation without gradient taps.")
@click.option("--steps", type=click.IntRange(min=1), default=6000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Per process.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate [default: 5e-4 classifier, 3e-4 otherwise].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--fp32", is_flag=True, help="Disable bf16 autocast.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock budget in minutes; the step count shrinks to fit it (the LR schedule still completes).")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming an existing checkpoint.")
@click.option("--ckpt-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--data", type=click.Path(file_okay=False), help="FSDD folder [default: $C2D_DATA or ../shared/data/fsdd].")
@click.option("--features", type=click.Path(dir_okay=False, exists=True), help="Precomputed features .npz instead of --data.")
@click.option("--release", "release_path", type=click.Path(dir_okay=False), help="Also write a weights-only copy here.")
def train(kind, out, size, classifier_path, no_gradient_taps, steps, batch_size, lr, seed, device, fp32, time_limit, fresh,
          ckpt_every, data, features, release_path) -> None:
    """Train the classifier, the score subnetwork (on a frozen classifier) or the U-Net baseline."""
    import torch

    from c2d.models.checkpoint import atomic_torch_save, release
    from c2d.models.data import load_features
    from c2d.models.train import TrainConfig, make_job, train as run_training
    from c2d.runtime.sde import SDEConfig

    if device == "cuda":
        if not torch.cuda.is_available():
            raise click.UsageError("--device cuda given but torch sees no CUDA device")
        import os

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = f"cuda:{torch.cuda.current_device()}"
    if kind == "subnet" and not classifier_path:
        raise click.UsageError("training the subnet needs --classifier CHECKPOINT (the frozen backbone)")
    lr = lr or (5e-4 if kind == "classifier" else 3e-4)
    job = make_job(kind, size, SDEConfig(), classifier_path, gradient_taps=not no_gradient_taps, seed=seed)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, bf16=not fp32, ckpt_every=ckpt_every,
                      time_limit_s=time_limit * 60 if time_limit else None)
    ckpt = run_training(job, load_features("train", data, features_file=features), cfg, out, device=device, fresh=fresh)
    if release_path and ckpt_rank0():
        atomic_torch_save(release(ckpt), release_path)
    click.echo(f"wrote {out} (step {ckpt['step']})")


def ckpt_rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@main.command("costs")
@click.option("--size", type=click.Choice(SIZE_NAMES), default="small", show_default=True)
def costs_cmd(size) -> None:
    """Parameters and MACs per sampling step (THOP-style) of every model variant, as a Markdown table."""
    from c2d.models.costs import cost_table, format_cost_table

    click.echo(format_cost_table(cost_table(size)))


@main.command()
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(file_okay=False))
def features(out, data) -> None:
    """Write FSDD log-Mel features (both splits) to one .npz, e.g. for a machine without the WAVs."""
    from c2d.models.data import export_features

    click.echo(f"wrote {export_features(out, data)}")


if __name__ == "__main__":
    main()
