"""`c2d calibrate` (record the generator's inputs along real sampler runs) and `c2d quantize` (int8 / fp16 bundles
that pass a quality gate against the fp32 one)."""

from __future__ import annotations

from pathlib import Path

import click

from c2d.cli.options import (
    STEPS_DEFAULT,
    BundleFolder,
    Finite,
    clear_errors,
    outputs_apart,
    sampler_option,
    seed_option,
    steps_option,
    threads_option,
)
from c2d.models.checkpoints import shipped_checkpoint
from c2d.runtime import limits


@click.command()
@click.argument("bundle", type=BundleFolder())
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Calibration folder to write.")
@click.option(
    "--seeds",
    type=click.IntRange(1, limits.MAX_CALIBRATION_SEEDS),
    default=1,
    show_default=True,
    help="Samples per digit and guidance scale (one graph call runs all digits x seeds).",
)
@click.option(
    "--guidance",
    "guidances",
    type=Finite(0, limits.MAX_GUIDANCE),
    multiple=True,
    help="Guidance scales to run; repeat for several [default: the bundle's and 0].",
)
@sampler_option("The deployed sampler. ")
@steps_option(f"The deployed step count {STEPS_DEFAULT}.")
@seed_option()
@threads_option()
@outputs_apart({"out": "-o"}, {"bundle": "BUNDLE"}, folder_outputs=("out",))
def calibrate(bundle, out, seeds, guidances, sampler, steps, seed, threads) -> None:
    """Record the generator's inputs at every step of real sampler runs (every digit, several seeds and guidance
    scales), for `c2d quantize --calib`; prints the activation ranges by noise level."""
    from c2d.calibration.ranges import ranges_markdown
    from c2d.calibration.record import CalibrationError, record
    from c2d.runtime.bundle import BundleError

    with clear_errors(CalibrationError, BundleError):
        info = record(
            bundle, out, seeds=seeds, guidances=list(guidances) or None, sampler=sampler, steps=steps, seed=seed, threads=threads, log=click.echo
        )
    click.echo(ranges_markdown(info["ranges_by_noise_level"]))
    click.echo(f"wrote {out}: {info['calls']} graph calls, {info['rows']} rows ({info['seconds']} s)")


@click.command()
@click.argument("bundle", type=BundleFolder())
@click.option("--mode", required=True, type=click.Choice(["int8-static", "int8-dynamic", "fp16", "mixed"]))
@click.option(
    "-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Quantized bundle to write (only if it passes the gate)."
)
@click.option("--calib", type=click.Path(file_okay=False, path_type=Path), default=None, help="Recording from `c2d calibrate` (int8-static, mixed).")
@click.option(
    "--method",
    type=click.Choice(["minmax", "entropy", "percentile"]),
    default="minmax",
    show_default=True,
    help="Calibration method for static int8.",
)
@click.option(
    "--vocoder-mode",
    type=click.Choice(["keep", "fp16", "int8-dynamic"]),
    default="keep",
    show_default=True,
    help="The vocoder's own precision (HiFi-GAN bundles).",
)
@click.option(
    "--max-step-error",
    type=Finite(0, 10, low_open=True),
    default=0.05,
    show_default=True,
    help="Gate: worst per-step relative eps error against fp32.",
)
@click.option(
    "--max-mel-distance",
    type=Finite(0, 100, low_open=True),
    default=0.35,
    show_default=True,
    help="Gate: mean |log-Mel difference| of final samples from the same noise (nats).",
)
@click.option("--max-accuracy-drop", type=Finite(0, 1), default=0.02, show_default=True, help="Gate: evaluator digit accuracy, fp32 minus quantized.")
@click.option(
    "--count",
    type=click.IntRange(1, limits.MAX_GATE_COUNT),
    default=5,
    show_default=True,
    help="Gate samples per digit (one graph call per step runs all of them).",
)
@click.option(
    "--evaluator",
    "evaluator_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="[default: the shipped models/checkpoints/evaluator.pt]",
)
@outputs_apart({"out": "-o"}, {"bundle": "BUNDLE", "calib": "--calib", "evaluator_path": "--evaluator"}, folder_outputs=("out",))
def quantize(bundle, mode, out, calib, method, vocoder_mode, max_step_error, max_mel_distance, max_accuracy_drop, count, evaluator_path) -> None:
    """Quantize a bundle's generator (and optionally its vocoder), then gate it against the fp32 bundle on the same
    noise; a bundle that fails the gate is not written."""
    from c2d.calibration.record import CalibrationError
    from c2d.export.exporter import ExportError
    from c2d.export.quantize import Budget, QuantizationError, quantize_bundle
    from c2d.runtime.bundle import BundleError

    budget = Budget(step_error=max_step_error, mel_distance=max_mel_distance, accuracy_drop=max_accuracy_drop, count=count)
    with clear_errors(CalibrationError, QuantizationError, BundleError, ExportError):
        manifest = quantize_bundle(
            bundle, out, mode, calib, method, budget, vocoder_mode, evaluator_path or shipped_checkpoint("evaluator.pt"), log=click.echo
        )
    q = manifest.quantization["measured"]
    size = manifest.generator.bytes / (bundle / manifest.generator.file).stat().st_size
    click.echo(
        f"wrote {out}: {mode}, generator {manifest.generator.bytes / 1e6:.2f} MB ({size:.0%} of fp32); "
        f"worst step error {q['max_step_error']:.4f}, log-Mel distance {q['mel_distance']:.3f}, "
        f"accuracy {q['accuracy']:.3f} (fp32 {q['accuracy_fp32']:.3f}) on {q['samples']} samples"
    )
