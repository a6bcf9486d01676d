"""`c2d train KIND`: one subcommand per model, each with only the options that apply to it."""

from __future__ import annotations

import click

from c2d.cli.options import Finite, clear_errors, outputs_apart
from c2d.runtime import limits

SIZE_NAMES = ("tiny", "small", "paper")
INPUTS = {
    "teacher_path": "--teacher",
    "classifier_path": "--classifier",
    "init_path": "--init-from",
    "features": "--features",
    "generator_bundle": "--bundle",
    "data": "--data",
}
OUTPUTS = {"out": "-o", "release_path": "--release"}


def common_options(default_lr: float):
    """The options of every kind: output, schedule, data, reproducibility."""
    options = [
        click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write (resumed if it exists)."),
        click.option("--steps", type=click.IntRange(1, limits.MAX_TRAIN_STEPS), default=6000, show_default=True),
        click.option("--batch-size", type=click.IntRange(1, limits.MAX_TRAIN_BATCH), default=32, show_default=True, help="Per process."),
        click.option("--lr", type=Finite(0, 1, low_open=True), default=default_lr, show_default=True, help="Peak learning rate."),
        click.option(
            "--seed",
            type=click.IntRange(0, limits.MAX_SEED_START),
            default=0,
            show_default=True,
            help="Seed of the initial weights, the batches and any subset (the one seed bound of every command).",
        ),
        click.option("--data", type=click.Path(file_okay=False), help="FSDD folder [default: $C2D_DATA or ../shared/data/fsdd]."),
    ]

    def wrap(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return wrap


def loop_options(fn):
    """The options of the kinds trained by models.train's loop (classifier, subnet, U-Net, vocoder)."""
    options = [
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        click.option("--fp32", is_flag=True, help="Disable bf16 autocast (it speeds training up only on CPUs with AMX)."),
        click.option(
            "--time-limit",
            type=Finite(0, 60 * 24 * 365, low_open=True),
            default=None,
            help="Wall-clock budget in minutes; the step count shrinks to fit it (the LR schedule still completes).",
        ),
        click.option("--fresh", is_flag=True, help="Start over instead of resuming an existing checkpoint."),
        click.option(
            "--ckpt-every",
            type=click.IntRange(min=1),
            default=500,
            show_default=True,
            help="Write the resumable checkpoint every this many steps (the classifier also logs its noisy test accuracy then).",
        ),
        click.option("--features", type=click.Path(dir_okay=False, exists=True), help="Precomputed features .npz instead of --data."),
        click.option("--release", "release_path", type=click.Path(dir_okay=False), help="Also write a weights-only copy here."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def choice_option(flag: str, choices: list[str], default: str, help: str):
    return click.option(flag, type=click.Choice(choices), default=default, show_default=True, help=help)


def init_from_option(help: str):
    return click.option("--init-from", "init_path", type=click.Path(dir_okay=False, exists=True), default=None, help=help)


def network_options(fn):
    """The 2-D networks: classifier, subnet, U-Net."""
    options = [
        click.option("--size", type=click.Choice(SIZE_NAMES), default="small", show_default=True, help="Named model size."),
        click.option("--channels-last", is_flag=True, help="NHWC memory format: the same training, often faster convolutions on a CPU."),
        init_from_option(
            "Start from this checkpoint's weights (same size and config; fresh optimizer and schedule; recorded in the "
            "output). Ignored when the output is resumed."
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def precond_option(fn):
    fn = choice_option(
        "--loss-weighting",
        ["output", "eps"],
        "output",
        "What the score loss is uniform on: the network's raw output (EDM's weighting) or eps (the eps network's, "
        "which counts low noise, the fine detail, more). The same loss for --precond eps.",
    )(fn)
    return choice_option(
        "--precond",
        ["eps", "gaussian-skip", "edm"],
        "eps",
        "How the network's output becomes eps. eps: directly; gaussian-skip: the data's Gaussian denoiser plus a "
        "residual; edm: EDM's c_skip / c_out for the VP SDE, whose error is not amplified at high noise (docs/samplers.md).",
    )(fn)


@click.group()
def train() -> None:
    """Train one model: the classifier, the score subnetwork on it, the U-Net baseline, a judge, or the vocoder.

    The shipped checkpoints (models/checkpoints/) come from these commands; a full run of the small models takes
    hours on one CPU core, so try them with a short --steps or --time-limit first."""


@train.command()
@common_options(5e-4)
@loop_options
@network_options
@outputs_apart(OUTPUTS, INPUTS)
def classifier(**options) -> None:
    """The noise-conditioned classifier (the backbone); logs its test accuracy at t = 0, 0.25, 0.5, 0.75, 1."""
    run_network("classifier", **options)


@train.command()
@common_options(3e-4)
@loop_options
@network_options
@precond_option
@click.option("--classifier", "classifier_path", required=True, type=click.Path(dir_okay=False, exists=True), help="The frozen backbone.")
@click.option("--no-gradient-taps", is_flag=True, help="Ablation: the subnet reads the classifier's features only.")
@click.option(
    "--train-digits",
    default=None,
    metavar="D,D,...",
    help="Train on these digits' clips only (e.g. 3,5,7); the classifier stays the full frozen one, and its guidance "
    "steers to the other digits (the paper's zero-shot ablation).",
)
@click.option(
    "--train-fraction",
    type=Finite(0, 1, low_open=True),
    default=None,
    help="Train on this fraction of the clips, stratified by digit and speaker, drawn from --seed (the paper's 3 %: 0.03).",
)
@outputs_apart(OUTPUTS, INPUTS)
def subnet(no_gradient_taps, **options) -> None:
    """The score subnetwork on a frozen classifier (the single-backbone generator)."""
    run_network("subnet", gradient_taps=not no_gradient_taps, **options)


@train.command()
@common_options(1e-4)
@loop_options
@click.option(
    "--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False, exists=True), help="Subnet checkpoint trained with --precond edm."
)
@click.option("--grid", type=click.IntRange(2, 1000), default=40, show_default=True, help="Points of the teacher's log-SNR ODE grid.")
@click.option("--skip", type=click.IntRange(1, 1000), default=4, show_default=True, help="Grid intervals one teacher step spans.")
@click.option("--gamma-max", type=Finite(0, limits.MAX_GUIDANCE), default=5.0, show_default=True, help="Guidance scales drawn from [0, this].")
@choice_option(
    "--objective",
    ["guided", "consistency"],
    "consistency",
    "guided: regress on the guided teacher's eps (stage 1, a forward-only guided denoiser any sampler runs); "
    "consistency: consistency distillation for 1-4 step sampling (stage 2, best started from a stage-1 student with --init-from).",
)
@choice_option(
    "--conditioning",
    ["digit", "seed"],
    "digit",
    "How the digit reaches the student. digit: an embedding added to the time embedding; seed: also the guidance seed, "
    "the closed-form start of the teacher's guidance gradient at the classifier's head (forward-only; models/student.py). "
    "--init-from needs a student of the same conditioning.",
)
@click.option(
    "--teacher-bf16",
    is_flag=True,
    help="Run the teacher under the same bf16 autocast as the student (about 1.8x faster teacher calls on AMX; its eps "
    "moves by about 0.003 rms). For --objective guided; consistency's ODE step amplifies that error.",
)
@init_from_option(
    "Start from this student checkpoint (an earlier stage, same teacher; recorded in the output; ignored when the "
    "output is resumed) [default: the teacher's decoder weights]."
)
@outputs_apart(OUTPUTS, INPUTS)
def student(out, steps, batch_size, lr, seed, fp32, ckpt_every, time_limit, release_path, **rest) -> None:
    """A few-step student distilled from a guided teacher: no gradient taps, no guidance gradient, so its graph has no
    backward pass; the digit and the guidance scale are its inputs (models/student.py). Two stages: --objective guided,
    then --objective consistency --init-from STAGE1.pt."""
    from c2d.models.jobs import train_student

    cfg = train_config(steps, batch_size, lr, seed, fp32, ckpt_every, False, time_limit)
    with clear_errors():
        ckpt = train_student(out, cfg, log=click.echo, **rest)
    finish(ckpt, out, release_path)


@train.command()
@common_options(3e-4)
@loop_options
@network_options
@precond_option
@outputs_apart(OUTPUTS, INPUTS)
def unet(**options) -> None:
    """The U-Net of the two-model baseline."""
    run_network("unet", **options)


@train.command()
@common_options(5e-4)
@loop_options
@click.option(
    "--generated",
    type=click.IntRange(min=0, max=100_000),
    default=1200,
    show_default=True,
    help="Mels sampled from --bundle added to FSDD's training mels (0: real mels only).",
)
@click.option(
    "--bundle",
    "generator_bundle",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="The generator bundle whose samples it also learns from [default: the shipped one].",
)
@choice_option(
    "--targets",
    ["recordings", "teacher"],
    "recordings",
    "recordings: magnitudes from FSDD's recordings where a mel has one, phase from HiFi-GAN; teacher: everything from HiFi-GAN (plain distillation).",
)
@outputs_apart(OUTPUTS, INPUTS)
def vocoder(out, steps, batch_size, lr, seed, data, device, fp32, time_limit, fresh, ckpt_every, features, release_path, **rest) -> None:
    """The Fourier vocoder, distilled from HiFi-GAN V1 universal on training-split and generated mels (needs c2d[export])."""
    from c2d.export.exporter import export_vocoder
    from c2d.models.hifigan import VocoderUnavailable
    from c2d.models.jobs import train_vocoder
    from c2d.runtime.audio import DEFAULT_MEL
    from c2d.runtime.bundle import BundleError
    from c2d.runtime.generate import default_bundle

    cfg = train_config(steps, batch_size, lr, seed, fp32, ckpt_every, False, time_limit)
    with clear_errors(VocoderUnavailable, BundleError):
        ckpt = train_vocoder(
            out,
            cfg,
            lambda path: export_vocoder("hifigan", DEFAULT_MEL, "teacher", path),
            rest["generator_bundle"] or default_bundle(),
            rest["generated"],
            rest["targets"],
            data,
            features,
            device,
            fresh,
            log=click.echo,
        )
    finish(ckpt, out, release_path)


@train.command()
@common_options(2e-3)
@click.option("--features", type=click.Path(dir_okay=False, exists=True), help="Precomputed features .npz instead of --data.")
@outputs_apart({"out": "-o"}, {"features": "--features", "data": "--data"})
def evaluator(out, steps, batch_size, lr, seed, data, features) -> None:
    """The log-Mel judge (a 1-D TDNN on clean log-Mels, training split only; its test accuracy is stored in the file)."""
    from c2d.models.jobs import train_log_mel_judge

    with clear_errors():
        accuracy, n = train_log_mel_judge(out, steps, batch_size, lr, seed, data, features, log=click.echo)
    click.echo(f"wrote {out}: test accuracy {accuracy * 100:.1f} % on {n} clips")


@train.command("audio-evaluator")
@common_options(2e-3)
@click.option("--fp32", is_flag=True, help="Disable bf16 autocast (used only on CPUs with AMX).")
@outputs_apart({"out": "-o"}, {"data": "--data"})
def audio_evaluator(out, steps, batch_size, lr, seed, data, fp32) -> None:
    """The MFCC judge (a 2-D ResNet on 8 kHz MFCCs of the recordings themselves, training split only)."""
    from c2d.models.jobs import train_mfcc_judge

    with clear_errors():
        accuracy, n = train_mfcc_judge(out, steps, batch_size, lr, seed, data, fp32, log=click.echo)
    click.echo(f"wrote {out}: test accuracy {accuracy * 100:.1f} % on {n} recordings")


def train_config(steps, batch_size, lr, seed, fp32, ckpt_every, channels_last, time_limit):
    from c2d.models.train import TrainConfig

    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        bf16=not fp32,
        ckpt_every=ckpt_every,
        monitor_every=ckpt_every,
        channels_last=channels_last,
        time_limit_s=time_limit * 60 if time_limit else None,
    )


def run_network(kind, out, steps, batch_size, lr, seed, fp32, ckpt_every, channels_last, time_limit, release_path, **rest) -> None:
    from c2d.models.jobs import train_network

    cfg = train_config(steps, batch_size, lr, seed, fp32, ckpt_every, channels_last, time_limit)
    with clear_errors():
        ckpt = train_network(kind, out, cfg, log=click.echo, **rest)
    finish(ckpt, out, release_path)


def finish(ckpt: dict, out, release_path) -> None:
    """The weights-only copy and the closing line, from the first process only (torchrun runs several)."""
    from c2d.models.checkpoint import atomic_torch_save, release
    from c2d.models.jobs import is_rank0

    if is_rank0():
        if release_path:
            atomic_torch_save(release(ckpt), release_path)
        click.echo(f"wrote {out} (step {ckpt['step']})")
