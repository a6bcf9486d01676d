"""`c2d evaluate`: score the audio `c2d generate` writes, with two independent judges and DNSMOS, with intervals."""

from __future__ import annotations

from pathlib import Path

import click

from c2d.cli.options import (
    BundleFolder,
    clear_errors,
    guidance_option,
    outputs_apart,
    sampler_option,
    seed_option,
    shipped_bundle_path,
    steps_option,
    threads_option,
)
from c2d.runtime import limits
from c2d.runtime.files import atomic_write_text


@click.command()
@click.argument("bundle", required=False, type=BundleFolder())
@click.option(
    "--count", type=click.IntRange(2, limits.MAX_EVAL_COUNT), default=20, show_default=True, help="Samples per digit (the headline table uses 100)."
)
@sampler_option()
@steps_option()
@guidance_option()
@seed_option()
@click.option(
    "--audio-evaluator",
    "audio_evaluator_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="MFCC judge [default: the shipped models/checkpoints/audio-evaluator.pt]",
)
@click.option(
    "--evaluator",
    "evaluator_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Log-Mel judge [default: the shipped models/checkpoints/evaluator.pt]",
)
@click.option("--data", type=click.Path(file_okay=False), help="FSDD folder: its training recordings are the judges' reference.")
@click.option("--no-dnsmos", is_flag=True, help="Skip DNSMOS (about 0.1 s per clip).")
@threads_option()
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the scores and what produced them (bundle hash, sampler, steps, guidance, seeds, vocoder, judges).",
)
@outputs_apart(
    {"json_path": "--json"},
    {"bundle": "BUNDLE", "audio_evaluator_path": "--audio-evaluator", "evaluator_path": "--evaluator", "data": "--data"},
    defaults={"bundle": shipped_bundle_path},
)
def evaluate(bundle, count, sampler, steps, guidance, seed, audio_evaluator_path, evaluator_path, data, no_dnsmos, threads, json_path) -> None:
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
        record = evaluate_bundle(bundle, count, sampler, steps, guidance, seed, judges, dnsmos, threads=threads, log=click.echo)
    if json_path:
        atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    p = record["provenance"]
    click.echo(scores_table({f"{p['sampler']} {p['steps']} steps, guidance {p['guidance']:g}, {p['vocoder']}": record["scores"]}))
    click.echo("KID x 1000; 95 % intervals in brackets; FID depends on the number of clips: compare at equal counts")
