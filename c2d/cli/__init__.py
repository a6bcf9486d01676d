"""The `c2d` command: one small module per stage, each parsing options, calling one library function and printing.

    train      c2d.cli.train       (PyTorch: classifier, subnet, U-Net, judges, vocoder)
    sample     c2d.cli.reference   (PyTorch reference sampler; costs; features)
    export     c2d.cli.export      (ONNX bundle; inspect)
    quantize   c2d.cli.quantize    (calibrate; quantize)
    generate   c2d.cli.run         (device runtime: generate, vocode)
    profile    c2d.cli.deploy      (latency, memory; the deployment choice)
    evaluate   c2d.cli.evaluate    (scores of the audio users hear)

Subcommands import torch only when they need it, so the device commands stay slim.
"""

from __future__ import annotations

import click

from c2d.cli import deploy, evaluate, export, quantize, reference, run, train
from c2d.cli.options import one_line, os_error_line
from c2d.runtime.errors import C2DError
from c2d.runtime.files import Interrupted, raise_on_signals


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


@click.group("c2d", cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="c2d", prog_name="c2d", message="%(prog)s %(version)s")
def main() -> None:
    """c2d: class-conditional spoken-digit generation with a single classifier backbone."""


for command in (
    train.train,
    reference.sample,
    reference.costs,
    reference.features,
    export.export,
    export.inspect,
    quantize.calibrate,
    quantize.quantize,
    run.generate,
    run.vocode,
    deploy.profile,
    evaluate.evaluate,
):
    main.add_command(command)
