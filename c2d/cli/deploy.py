"""`c2d profile`: latency, real-time factor and memory of a bundle here; with --backend all, the deployment choice
(the fastest backend x precision that passes the quality gate), recorded for `c2d generate`."""

from __future__ import annotations

from pathlib import Path

import click

from c2d.cli.options import (
    BACKEND_NAMES,
    STEPS_DEFAULT,
    BundleFolder,
    Finite,
    clear_errors,
    echo_warning,
    outputs_apart,
    sampler_option,
    shipped_bundle_path,
    steps_option,
    threads_option,
)
from c2d.runtime import limits
from c2d.runtime.files import atomic_write_text, output_target


@click.command()
@click.argument("bundle", required=False, type=BundleFolder())
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
@click.option("--warmup", type=click.IntRange(0, 1000), default=2, show_default=True, help="Sampler steps run untimed before measuring.")
@click.option(
    "--iterations",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Time at least this many sampler steps (whole runs of --steps each) [default: one run].",
)
@click.option("--duration", type=Finite(0.0, 3600.0, low_open=True), default=None, help="Time whole runs for at least this many seconds instead.")
@click.option("--per-op", is_flag=True, help="Also break a run's time down by operator type (ONNX Runtime's profiler, OpenVINO's counters).")
@click.option(
    "--precision",
    "ov_precision",
    type=click.Choice(["f32", "bf16"]),
    default=None,
    help="OpenVINO's inference precision for --backend openvino [default: f32].",
)
@click.option(
    "--target",
    default=None,
    is_eager=True,  # parsed first: --threads is then checked against the device's cores there, not this machine's
    metavar="ssh://[USER@]HOST[:PORT]",
    help="Profile on this device over SSH instead of here: c2d stages its runtime and the bundle in a temporary folder there, "
    "runs the same profile with the device's engines, brings the results back and removes what it staged.",
)
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE", help="With --target: passed to ssh as -o KEY=VALUE. Repeatable.")
@click.option("--keep", is_flag=True, help="With --target: leave the staged folder on the device (its path is printed).")
@click.option("--remote-python", default="python3", show_default=True, help="With --target: the device's Python (3.10 or newer).")
@click.option("--remote-dir", default=None, help="With --target: make the staging folder here on the device [default: its temp folder].")
@click.option(
    "--wheels",
    "wheelhouse",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="With --target: take the device's wheels only from this folder (offline) [default: pip download on this host].",
)
@click.option("--device-index", is_flag=True, help="With --target: the device's pip installs the runtime from its own package index.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the full profile here.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the table here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG chart here.")
@outputs_apart(
    {"json_path": "--json", "md_path": "--markdown", "plot_path": "--plot"},
    {"bundle": "BUNDLE", "also": "--also"},
    defaults={"bundle": shipped_bundle_path},
)
def profile(
    bundle, backend, in_bundle, also, device, threads, sampler, steps, batch, warmup, iterations, duration, per_op, ov_precision, **outputs
) -> None:
    """Latency (per step: min / mean / p50 / p90 / p99 / max and its spread; end to end), real-time factor, vocoder
    share, memory, load time, sizes, GMAC/s against the same engine's GEMM peak at the precision used, and the machine
    record. Warns when the figures are noisy."""

    from c2d.runtime.backends import BackendUnavailable
    from c2d.runtime.bundle import BundleError
    from c2d.runtime.profile import Measure, profile_bundle, profile_markdown

    refuse_options_that_do_not_apply(backend, in_bundle=in_bundle, also=also, ov_precision=ov_precision, iterations=iterations, duration=duration)
    remote = {k: outputs.pop(k) for k in REMOTE_OPTIONS}
    if remote["target"]:
        forwarded = dict(
            backend=backend, device=device, threads=threads, sampler=sampler, steps=steps, batch=batch, warmup=warmup,
            iterations=iterations, duration=duration, per_op=per_op, ov_precision=ov_precision,
        )  # fmt: skip
        return profile_remotely(bundle or shipped_bundle_path(), remote, forwarded, in_bundle, also, **outputs)
    if any(remote[k] for k in REMOTE_OPTIONS if k != "remote_python") or remote["remote_python"] != "python3":
        raise click.UsageError("--ssh-option, --keep, --remote-python, --remote-dir, --wheels and --device-index apply with --target")
    if backend == "all":
        return choose_deployment(bundle, threads, sampler, steps, outputs["json_path"], outputs["md_path"], in_bundle, also)
    try:
        measure = Measure(warmup, iterations, duration, per_op)
        result = profile_bundle(bundle, backend, steps, batch, sampler, threads, device, measure, ov_precision)
    except (BundleError, BackendUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in result["warnings"]:
        echo_warning(warning)
    table = profile_markdown(result)
    write_outputs(result, table, **outputs)
    click.echo(table)


def write_outputs(result: dict, table: str, json_path, md_path, plot_path) -> None:
    """The profile as JSON, its table as Markdown and its chart as PNG, where asked for (each written atomically)."""
    import json

    from c2d.runtime.profile import plot_profile

    for path, text in ((json_path, json.dumps(result, indent=2) + "\n"), (md_path, table)):
        if path:
            atomic_write_text(path, text)
    if plot_path:
        try:
            plot_profile(result, plot_path)
        except ImportError as exc:
            raise click.ClickException(f"--plot: {exc}") from exc


REMOTE_OPTIONS = ("target", "ssh_options", "keep", "remote_python", "remote_dir", "wheelhouse", "device_index")


def forwarded_arguments(o: dict) -> list[str]:
    """The `c2d profile` options that the device runs with: the ones given here, as they were given."""
    ctx = click.get_current_context()
    given = lambda name: ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    args = ["--backend", o["backend"]]
    for name, flag in (
        ("threads", "--threads"),
        ("sampler", "--sampler"),
        ("steps", "--steps"),
        ("iterations", "--iterations"),
        ("duration", "--duration"),
    ):
        if o[name] is not None:
            args += [flag, str(o[name])]
    for name, flag in (("batch", "--batch"), ("warmup", "--warmup"), ("device", "--device")):
        if given(name):
            args += [flag, str(o[name])]
    if o["ov_precision"]:
        args += ["--precision", o["ov_precision"]]
    return args + (["--per-op"] if o["per_op"] else [])


def profile_remotely(bundle: Path, remote: dict, forwarded: dict, in_bundle: bool, also, json_path, md_path, plot_path) -> None:
    """`c2d profile --target`: the same profile on the device; its JSON, and the table and chart made from it, here."""
    from c2d.runtime.deployment import deployment_markdown
    from c2d.runtime.profile import profile_markdown
    from c2d.runtime.remote import RemoteRun, remote_profile

    if in_bundle or also:
        raise click.UsageError("--in-bundle and --also profile bundles on this machine; with --target the choice goes to the device's own cache")
    for path in (json_path, md_path, plot_path):
        if path:
            output_target(path)
    spec = RemoteRun(
        remote["target"],
        tuple(remote["ssh_options"]),
        remote["remote_python"],
        remote["remote_dir"],
        remote["wheelhouse"],
        remote["device_index"],
        remote["keep"],
    )
    openvino = {"openvino": "required", "all": "optional"}.get(forwarded["backend"], "no")
    with clear_errors():
        result = remote_profile(spec, Path(bundle), forwarded_arguments(forwarded), openvino, click.echo)
    table = deployment_markdown(result) if forwarded["backend"] == "all" else profile_markdown(result)
    write_outputs(result, table, json_path, md_path, plot_path)
    written = [str(p) for p in (json_path, md_path, plot_path) if p]
    click.echo(
        f"profiled on {result['remote']['target']} ({result['machine']['cpu']}, {result['machine']['arch']})"
        + (f"; wrote {', '.join(written)}" if written else "")
    )


SINGLE_RUN_ONLY = {
    "batch": "--batch: --backend all measures batch 1, as `c2d generate` runs",
    "device": "--device: --backend all chooses among the CPU engines",
    "plot_path": "--plot: --backend all writes a table (--markdown, --json), not a chart",
    "warmup": "--warmup: --backend all times interleaved rounds of its own",
    "per_op": "--per-op: profile one backend to see its operators",
}


def refuse_options_that_do_not_apply(backend: str, **given) -> None:
    """A clear usage error for every option given on the command line that the chosen mode would ignore."""
    ctx = click.get_current_context()
    explicit = lambda name: ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    if backend == "all":
        for name, why in SINGLE_RUN_ONLY.items():
            if explicit(name):
                raise click.UsageError(f"{why}; leave it off")
        if explicit("iterations") or explicit("duration"):
            raise click.UsageError("--iterations / --duration: --backend all times interleaved rounds of its own; leave them off")
    else:
        if given["in_bundle"]:
            raise click.UsageError("--in-bundle applies to --backend all")
        if given["also"]:
            raise click.UsageError("--also applies to --backend all")
    if given["ov_precision"] and backend != "openvino":
        raise click.UsageError("--precision applies to --backend openvino (--backend all tries every precision)")
    if given["iterations"] is not None and given["duration"] is not None:
        raise click.UsageError("give --iterations or --duration, not both")


def choose_deployment(bundle, threads, sampler, steps, json_path, md_path, in_bundle: bool, also=()) -> None:
    import json
    import os
    from dataclasses import replace

    from c2d.runtime.contract import DEPLOYMENT_FILE
    from c2d.runtime.deployment import GATE_BUDGET, choose, deployment_markdown
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
        result = choose(bundle, threads, gate_budget=replace(GATE_BUDGET, steps=steps), sampler=sampler, log=click.echo, out=out, also=also)
    table = deployment_markdown(result)
    for path, text in ((json_path, json.dumps(result, indent=2) + "\n"), (md_path, table)):
        if path:
            atomic_write_text(path, text)
    click.echo(table)
    click.echo(f"wrote {result['path']}")
