"""The device commands: `c2d generate` (digits to audio files, no torch) and `c2d vocode` (log-Mels to audio files)."""

from __future__ import annotations

from pathlib import Path

import click

from c2d.cli.options import (
    BACKEND_NAMES,
    Finite,
    bundle_option,
    clear_errors,
    digits_option,
    echo_warning,
    guidance_option,
    outputs_apart,
    sampler_option,
    seed_option,
    shipped_bundle_path,
    steps_option,
    threads_option,
)
from c2d.runtime import limits
from c2d.runtime.generate import DEFAULT_PEAK_DBFS

OUT_HELP = "Audio file, .wav or .flac (several: OUT-<name>.ext)."


def level_options(fn):
    fn = click.option("--raw-level", is_flag=True, help="Keep the level the model produced (clipped to full scale) instead of --peak-dbfs.")(fn)
    return click.option(
        "--peak-dbfs",
        type=Finite(limits.MIN_PEAK_DBFS, 0.0),
        default=DEFAULT_PEAK_DBFS,
        show_default=True,
        help="Scale each file so its peak sits at this level (dBFS).",
    )(fn)


@click.command()
@digits_option(required=True)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help=OUT_HELP)
@click.option(
    "--count", type=click.IntRange(1, limits.MAX_SAMPLES), default=1, show_default=True, help=f"Samples per digit; {limits.REASONS['samples']}."
)
@steps_option()
@sampler_option()
@guidance_option()
@seed_option()
@click.option(
    "--backend",
    type=click.Choice(BACKEND_NAMES),
    default=None,
    help="[default: the deployment profile recorded for this bundle's generator on this machine (c2d profile --backend all), else ort]",
)
@click.option("--precision", type=click.Choice(["f32", "bf16"]), default=None, help="openvino: inference precision [default: f32].")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="ort: CPU or CUDA provider.")
@threads_option()
@bundle_option()
@click.option(
    "--sample-rate",
    type=click.IntRange(limits.MIN_SAMPLE_RATE, limits.MAX_SAMPLE_RATE),
    default=None,
    help=f"Resample to this rate, {limits.REASONS['sample_rate']} [default: the vocoder's].",
)
@level_options
@click.option("--plot", is_flag=True, help="Also write a spectrogram PNG next to OUT.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@outputs_apart({"out": "-o"}, {"bundle": "--bundle"}, defaults={"bundle": shipped_bundle_path})
def generate(
    digits, out, count, steps, sampler, guidance, seed, backend, precision, device, threads, bundle, sample_rate, peak_dbfs, raw_level, plot, quiet
):
    """Generate spoken digits on the device runtime (no torch) and write audio files."""
    from tqdm import tqdm

    from c2d.runtime.backends import BackendOptions
    from c2d.runtime.files import pyplot
    from c2d.runtime.generate import DEFAULT_BATCH, load
    from c2d.runtime.outputs import audio_format, write_generation

    if precision and backend != "openvino":
        raise click.UsageError("--precision applies to --backend openvino")
    if len(digits) * count > limits.MAX_SAMPLES:
        raise click.UsageError(f"{len(digits)} digits x --count {count} = {len(digits) * count} samples; {limits.REASONS['samples']}")
    with clear_errors(ImportError):
        audio_format(out)
        if plot:
            pyplot()  # ImportError naming matplotlib, before the progress bar starts
        gen = load(bundle, backend, BackendOptions(device=device, threads=threads, precision=precision))
        sampler_name, n_steps = gen.sampler_and_steps(sampler, steps)
        batches = -(-len(digits) * count // DEFAULT_BATCH)
        with tqdm(total=n_steps * batches, desc=f"{sampler_name} x{n_steps}", unit="step", disable=quiet, leave=False) as bar:
            run = write_generation(
                gen, digits, out, count, seed, steps, sampler, guidance, sample_rate, None if raw_level else peak_dbfs, plot, lambda *_: bar.update()
            )
    for message in run.warnings:
        echo_warning(message)
    click.echo(f"backend: {gen.backend_note}")
    for p in run.paths + ([run.png] if run.png else []):
        click.echo(f"wrote {p}")
    for p, problem in run.problems:
        echo_warning(f"{p.name}: {problem}")
    seconds = len(run.paths) * gen.meta.mel.clip_seconds
    click.echo(
        f"{len(run.paths)} x {gen.meta.mel.clip_seconds:.2f} s at {run.sample_rate} Hz; {run.sampler} {run.steps} steps, guidance "
        f"{run.guidance:g}, on {gen.backend_name}/{device}, vocoder {gen.vocoder.name}: sampling {run.sampling_seconds:.2f} s, vocoder "
        f"{run.vocoder_seconds:.2f} s, real-time factor {(run.sampling_seconds + run.vocoder_seconds) / seconds:.2f}"
    )


@click.command()
@click.argument("mels", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help=OUT_HELP)
@click.option(
    "--normalised",
    is_flag=True,
    help="MELS holds the model's normalised [-1, 1] space instead of natural-log Mels (what `c2d sample` and the runtime write).",
)
@bundle_option("Bundle whose vocoder runs [default: the shipped one].")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="ort", show_default=True)
@threads_option()
@level_options
@outputs_apart({"out": "-o"}, {"mels": "MELS", "bundle": "--bundle"}, defaults={"bundle": shipped_bundle_path})
def vocode(mels, out, normalised, bundle, backend, threads, peak_dbfs, raw_level) -> None:
    """Vocode log-Mel spectrograms from a .npy file ([n_mels, T], [N, n_mels, T] or [N, 1, n_mels, T]) with a bundle's
    vocoder and write audio files; nothing is written unless every one of them vocodes."""
    import numpy as np

    from c2d.runtime.audio import normalize_peak
    from c2d.runtime.backends import BackendOptions
    from c2d.runtime.generate import load
    from c2d.runtime.outputs import check_audio_outputs, numbered_paths, write_audio_files
    from c2d.runtime.vocoder import read_log_mels

    with clear_errors():
        check_audio_outputs([out])
        gen = load(bundle, backend, BackendOptions(threads=threads))
        log_mel = read_log_mels(mels, gen.meta.mel, normalised)
        paths = numbered_paths(out, [str(k) for k in range(len(log_mel))])
        check_audio_outputs(paths)
        audio = gen.vocoder(log_mel)
    audio = np.clip(audio if raw_level else normalize_peak(audio, peak_dbfs), -1.0, 1.0)
    write_audio_files(paths, audio, gen.sample_rate)
    for p in paths:
        click.echo(f"wrote {p}")
    click.echo(f"{len(paths)} x {audio.shape[1] / gen.sample_rate:.2f} s at {gen.sample_rate} Hz, vocoder {gen.vocoder.name}")
