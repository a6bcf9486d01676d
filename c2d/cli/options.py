"""What every stage's command shares: option types, the shared options, and how errors end (one line, no traceback).

numpy-free and torch-free: `c2d --help` and the device commands import nothing heavy.
"""

from __future__ import annotations

import contextlib
import functools
import math

import click

from c2d.models.checkpoints import SHIPPED_SUBNET, shipped_checkpoint
from c2d.runtime import limits
from c2d.runtime.backends import BACKENDS
from c2d.runtime.contract import LABELS
from c2d.runtime.errors import C2DError
from c2d.runtime.samplers import SAMPLERS

BACKEND_NAMES = tuple(BACKENDS)
SAMPLER_NAMES = tuple(SAMPLERS)  # CLI choices come from the registries (numpy-only imports)
SIZE_NAMES = ("tiny", "small", "paper")
DIGIT_NAMES = LABELS  # the bundle contract's class names
STEPS_DEFAULT = "[default: the bundle's for its default sampler, else the sampler's own]"


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


class Digit(click.ParamType):
    """0-9 or zero..nine (any case), as an int: the same digits in every command."""

    name = "digit"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if text.isdigit() and int(text) < len(DIGIT_NAMES):
            return int(text)
        if text in DIGIT_NAMES:
            return DIGIT_NAMES.index(text)
        self.fail(f"{value!r} is not a digit: use 0-9 or zero..nine", param, ctx)

    def get_metavar(self, param, ctx=None):
        return "DIGIT"


def digits_option(required: bool = False, help: str = "0-9 or zero..nine; repeat for several."):
    return click.option("--digit", "digits", multiple=True, required=required, type=Digit(), help=help)


def seed_option():
    """One bound for every command: a run makes at most MAX_LOG_MEL_SAMPLES samples, sample k using seed + k."""
    return click.option(
        "--seed",
        type=click.IntRange(0, limits.MAX_SEED_START),
        default=0,
        show_default=True,
        help=f"Sample k uses seed + k; {limits.REASONS['seed']}.",
    )


def steps_option(text: str = f"Sampler steps (network evaluations) {STEPS_DEFAULT}."):
    return click.option("--steps", type=click.IntRange(1, limits.MAX_STEPS), default=None, help=f"{text} Bound: {limits.REASONS['steps']}.")


def guidance_option(default: float | None = None):
    text = "[default: the bundle's own; `c2d inspect` shows it]" if default is None else ""
    return click.option(
        "--guidance",
        type=Finite(0, limits.MAX_GUIDANCE),
        default=default,
        show_default=default is not None,
        help=f"Classifier guidance scale gamma, {limits.REASONS['guidance']}; 0: unconditional. {text}".strip(),
    )


def sampler_option(purpose: str = ""):
    """--sampler, default None: the bundle's default sampler (its metadata), listed with what each one is."""
    listing = "; ".join(f"{name}: {spec.summary}" for name, spec in SAMPLERS.items())
    return click.option(
        "--sampler", type=click.Choice(SAMPLER_NAMES), default=None, help=f"{purpose}{listing}. [default: the bundle's default sampler]"
    )


class Threads(click.IntRange):
    """1 to this machine's cores; where the command runs on a --target device (an eager option, parsed first), any
    positive count: the device checks it against its own cores."""

    def __init__(self):
        super().__init__(1, limits.max_threads())

    def convert(self, value, param, ctx):
        if ctx is not None and ctx.params.get("target"):
            return click.IntRange(1, None).convert(value, param, ctx)
        return super().convert(value, param, ctx)


def threads_option():
    return click.option(
        "--threads",
        type=Threads(),
        default=None,
        help=f"CPU threads [default: all cores]; {limits.REASONS['threads']} (with --target: the device's cores).",
    )


class BundleFolder(click.ParamType):
    """A bundle folder; or, where no such folder exists here, the name of a bundle shipped in the package."""

    name = "bundle"

    def convert(self, value, param, ctx):
        from pathlib import Path

        from c2d.runtime.generate import resolve_bundle, shipped_bundles

        if isinstance(value, Path):
            return value
        path = resolve_bundle(str(value))  # the one rule for names, shared with c2d.runtime.load
        if path.is_dir():
            return path
        if path.exists():
            self.fail(f"{value!r} is a file; a bundle is a folder (from `c2d export`)", param, ctx)
        self.fail(f"no bundle folder {value!r}, and no shipped bundle of that name (shipped: {', '.join(shipped_bundles())})", param, ctx)


def bundle_option(help: str = "Bundle folder from `c2d export`, or the name of a bundle shipped in the package [default: small, the shipped one]."):
    return click.option("--bundle", type=BundleFolder(), default=None, help=help)


def shipped_bundle_path():
    from c2d.runtime.generate import default_bundle

    return default_bundle()


def shipped_subnet_path():
    return shipped_checkpoint(SHIPPED_SUBNET)


@contextlib.contextmanager
def clear_errors(*extra: type[Exception]):
    """Known failures (bad data, bad checkpoint, bad values) end with one line naming the problem, no traceback."""
    try:
        yield
    except (C2DError, ValueError, *extra) as exc:
        raise click.ClickException(str(exc)) from exc


def outputs_apart(outputs: dict[str, str], inputs: dict[str, str], folder_outputs: tuple[str, ...] = (), defaults: dict | None = None):
    """Decorator (closest to the function): before the command runs, refuse outputs that are, or lie inside, one of
    its inputs, or that replace a folder holding one (runtime.files.check_outputs_apart). outputs / inputs map
    parameter names to what the user typed (-o, BUNDLE, ...); `defaults` gives the path an input takes when it is
    left out (the shipped bundle, the shipped checkpoint); multi-valued inputs are checked one by one."""

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


def echo_warning(message: str) -> None:
    """Every warning in one form: 'warning: <message>' on stderr."""
    click.echo(f"warning: {message}", err=True)


def one_line(message: str, limit: int = 600) -> str:
    """A message folded onto one line (torch's and the engines' errors span several), cut at `limit` characters."""
    text = "; ".join(part.strip() for part in message.splitlines() if part.strip()) or "unknown error"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def os_error_line(exc: OSError) -> str:
    """'cannot write /x/y: Permission denied' rather than an errno tuple or a traceback."""
    name = exc.filename if exc.filename is not None else ""
    return f"{exc.strerror or exc}: {name}" if name else str(exc.strerror or exc)
