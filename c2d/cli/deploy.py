"""`c2d profile`: latency, real-time factor and memory of a bundle here; with --backend all, the deployment choice
(the fastest backend x precision that passes the quality gate), recorded for `c2d generate`."""

from __future__ import annotations

from pathlib import Path

import click

from c2d.cli.options import (
    BACKEND_NAMES,
    STEPS_DEFAULT,
    clear_errors,
    outputs_apart,
    sampler_option,
    shipped_bundle_path,
    steps_option,
    threads_option,
)
from c2d.runtime import limits
from c2d.runtime.files import atomic_write_text, output_target


@click.command()
@click.argument("bundle", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--backend",
    type=click.Choice(BACKEND_NAMES + ("all",)),
    default="ort",
    show_default=True,
    help="all: measure and gate every backend x precision here and record the fastest passing one for this "
    "generator file and machine in the per-user cache (~/.cache/c2d/deployments), where `c2d generate` finds it.",
)
@click.option(
    "--in-bundle",
    is_flag=True,
    help="With --backend all: write the profile to BUNDLE/deployment.json instead (read before the cache; the bundle folder must be writable).",
)
@click.option(
    "--also",
    "also",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="With --backend all: a quantized bundle made from BUNDLE (`c2d quantize`) whose candidates are measured and "
    "gated beside BUNDLE's; if one is the fastest passing choice, `c2d generate` on BUNDLE runs it. Repeatable.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@threads_option()
@sampler_option()
@steps_option(f"Sampler steps of the run (with --backend all: of the quality gate) {STEPS_DEFAULT}.")
@click.option(
    "--batch", type=click.IntRange(1, limits.MAX_BATCH), default=1, show_default=True, help=f"Samples per graph call; {limits.REASONS['batch']}."
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the full profile here.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the table here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG chart here.")
@outputs_apart(
    {"json_path": "--json", "md_path": "--markdown", "plot_path": "--plot"},
    {"bundle": "BUNDLE", "also": "--also"},
    defaults={"bundle": shipped_bundle_path},
)
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

    from c2d.runtime.contract import DEPLOYMENT_FILE
    from c2d.runtime.deployment import choose, deployment_markdown
    from c2d.runtime.gate import Budget
    from c2d.runtime.generate import default_bundle

    bundle = bundle or default_bundle()
    out = Path(bundle) / DEPLOYMENT_FILE if in_bundle else None
    if in_bundle and not os.access(bundle, os.W_OK):
        raise click.ClickException(
            f"--in-bundle: {bundle} is not writable here (an installed package?); leave --in-bundle off to record the profile in the per-user cache"
        )
    for path in (out, json_path, md_path):
        if path:
            output_target(path)
    with clear_errors():
        result = choose(bundle, threads, gate_budget=Budget(count=1, steps=steps), sampler=sampler, log=click.echo, out=out, also=also)
    table = deployment_markdown(result)
    for path, text in ((json_path, json.dumps(result, indent=2) + "\n"), (md_path, table)):
        if path:
            atomic_write_text(path, text)
    click.echo(table)
    click.echo(f"wrote {result['path']}")
