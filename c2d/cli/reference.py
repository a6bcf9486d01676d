"""The PyTorch side of sampling and costs: `c2d sample` (the reference sampler), `c2d costs`, `c2d features`."""

from __future__ import annotations

import click

from c2d.cli.options import SAMPLER_NAMES, SIZE_NAMES, clear_errors, digits_option, guidance_option, outputs_apart, seed_option, shipped_subnet_path
from c2d.models.checkpoints import SHIPPED_SUBNET
from c2d.runtime import limits
from c2d.runtime.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS


@click.command()
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help=f"Subnet or U-Net checkpoint [default: the shipped generator, models/checkpoints/{SHIPPED_SUBNET}].",
)
@click.option(
    "--classifier",
    "classifier_path",
    type=click.Path(dir_okay=False, exists=True),
    help="Guiding classifier (U-Net only; a subnet uses its own backbone).",
)
@digits_option(help="0-9 or zero..nine; repeat for several; none = unconditional.")
@click.option("--count", type=click.IntRange(1, limits.MAX_SAMPLES), default=1, show_default=True, help="Samples per digit.")
@click.option(
    "--sampler",
    type=click.Choice(SAMPLER_NAMES),
    default=DEFAULT_SAMPLER,
    show_default=True,
    help="The runtime's samplers (same code): " + "; ".join(f"{n}: {s.summary}" for n, s in SAMPLERS.items()) + ".",
)
@click.option(
    "--steps",
    type=click.IntRange(1, limits.MAX_STEPS),
    default=None,
    help=f"[default: {DEFAULT_STEPS} for {DEFAULT_SAMPLER}, what c2d export writes into a bundle; else the sampler's own]",
)
@guidance_option(3.0)
@seed_option()
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output .npy: natural-log Mels [N, 80, 88], what `c2d vocode` reads."
)
@outputs_apart({"out": "-o"}, {"checkpoint": "--checkpoint", "classifier_path": "--classifier"}, defaults={"checkpoint": shipped_subnet_path})
def sample(checkpoint, classifier_path, digits, count, sampler, steps, guidance, seed, device, out) -> None:
    """PyTorch reference sampler (the runtime's sampler code driving the torch model): log-Mel samples from a checkpoint."""
    import numpy as np

    from c2d.models.sampling import load_sampling_model, reference_log_mels
    from c2d.runtime.files import atomic_path

    with clear_errors():
        model, sde, mel = load_sampling_model(checkpoint or str(shipped_subnet_path()), classifier_path, conditional=bool(digits))
        labels = [d for d in digits for _ in range(count)] if digits else None
        log_mel, sampler, steps = reference_log_mels(model, sde, seed, count, labels, guidance, sampler, steps, device, mel)
    with atomic_path(out, ".npy") as tmp:
        np.save(tmp, log_mel)
    what = "digits " + ",".join(map(str, digits)) if digits else "unconditional"
    click.echo(f"wrote {out}: {log_mel.shape[0]} log-Mels, {what}; {sampler} {steps} steps")


@click.command("costs")
@click.option("--size", type=click.Choice(SIZE_NAMES), default="small", show_default=True)
def costs(size) -> None:
    """Parameters and MACs per sampling step (THOP-style) of every model variant, as a Markdown table."""
    from c2d.models.costs import cost_table, format_cost_table

    click.echo(format_cost_table(cost_table(size)))


@click.command()
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(file_okay=False))
@outputs_apart({"out": "-o"}, {"data": "--data"})
def features(out, data) -> None:
    """Write FSDD log-Mel features (both splits) to one .npz, e.g. for a machine without the WAVs."""
    from c2d.models.data import export_features

    click.echo(f"wrote {export_features(out, data)}")
