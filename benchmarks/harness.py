"""What every benchmark shares: its command-line flags, interleaved timing, the provenance record and the result
writer. A benchmark parses with `parser`, times backends side by side with `interleaved_rounds` (every round visits
every backend once, so a noisy shared machine hits them alike) and ends with `write_results`, which stamps the
record with the command, machine and date that docs/results/ shows."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from c2d.runtime.files import atomic_write_text
from c2d.runtime.machine import cpuinfo, isa_features
from c2d.runtime.opstats import openvino_kernel_times, ort_kernel_times
from c2d.runtime.timing import interleaved_latency, interleaved_rounds

__all__ = [
    "AUDIO_SEED",
    "RESULTS",
    "cached_samples",
    "cpu_model",
    "difference_to",
    "interleaved_latency",
    "interleaved_rounds",
    "openvino_kernel_times",
    "ort_kernel_times",
    "parse",
    "parser",
    "passes",
    "point_audio",
    "provenance",
    "write_results",
]

RESULTS = Path(__file__).resolve().parent / "results"
AUDIO_SEED = 1000  # Table 1's seeds: every benchmark that pairs audio clip by clip draws sample k from seed 1000 + k
WORSE_IS_HIGHER = {"accuracy": False, "fid": True, "kid": True, "ovrl": False}


def parser(
    doc: str | None,
    name: str,
    threads: int | None = None,
    rounds: int | None = None,
    seed: int | None = None,
    work: str | bool = False,
    bundle: bool = False,
) -> argparse.ArgumentParser:
    """argparse with the flags benchmarks share: --results (the result file, benchmarks/results/<name>.json) and,
    when asked for, --threads, --rounds and --seed (with these defaults), --out-dir (caches and intermediate files:
    runs/<name>, or runs/<work> when work names another benchmark's folder to share) and --bundle (default: the
    shipped one, filled in by `parse`)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS / f"{name}.json", help="Result file (a Markdown table is written beside it).")
    if threads is not None:
        p.add_argument("--threads", type=int, default=threads, help="Engine threads.")
    if rounds is not None:
        p.add_argument("--rounds", type=int, default=rounds, help="Interleaved timing rounds (median over rounds).")
    if seed is not None:
        p.add_argument("--seed", type=int, default=seed)
    if work:
        folder = work if isinstance(work, str) else name
        p.add_argument("--out-dir", type=Path, default=Path("runs") / folder, help="Caches and intermediate files (resumable).")
    if bundle:
        p.add_argument("--bundle", type=Path, default=None, help="[default: the shipped bundle]")
    return p


def parse(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """ap.parse_args, with --bundle defaulting to the shipped bundle where the parser has it."""
    args = ap.parse_args(argv)
    if hasattr(args, "bundle") and args.bundle is None:
        from c2d.runtime.generate import default_bundle

        args.bundle = default_bundle()
    return args


def cpu_model() -> str:
    """The CPU model as lscpu names it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set flags that change which arithmetic is fast (AMX, AVX-512 bf16/VNNI, ...): runtime/machine.py."""
    return isa_features(info=cpuinfo())


def commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(argv: list[str] | None = None) -> dict:
    """command, date, machine (CPU model, ISA flags, cores) and commit of this run."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0])
    command = f"python -m c2d.benchmarks.{script.stem}" if script.parent.name == "benchmarks" else shlex.join([script.name])
    return {
        "command": " ".join([command, *map(shlex.quote, argv[1:])]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "commit": commit(),
    }


def write_results(path: Path, result: dict, markdown: str) -> None:
    """result as JSON at `path` (stamped with this run's command, date and machine unless it names its own) and the
    table as Markdown beside it (.md), then the table on stdout."""
    stamp = provenance()
    for key in ("command", "date", "cpu"):
        result.setdefault(key, stamp[key])
    result.setdefault("provenance", stamp)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    atomic_write_text(path.with_suffix(".md"), markdown)
    print(markdown)


def parse_point(text: str) -> tuple[str, int]:
    """SAMPLER:STEPS -> (sampler, steps), for argparse."""
    from c2d.runtime.samplers import SAMPLERS

    name, _, steps = text.rpartition(":")
    if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: want SAMPLER:STEPS with SAMPLER one of {', '.join(SAMPLERS)}")
    return name, int(steps)


def cached_samples(cache: Path, generate: Callable[[], tuple[np.ndarray, np.ndarray]], label: str, log) -> tuple[np.ndarray, np.ndarray]:
    """(samples, digits) from the .npz at `cache`, else from generate(), then kept there (written atomically), so an
    interrupted benchmark resumes where it stopped."""
    if cache.is_file():
        data = np.load(cache)
        return data["x"], data["digits"]
    start = time.time()
    x, digits = generate()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez_compressed(tmp, x=x, digits=digits)
    tmp.replace(cache)
    log(f"{label}: {len(x)} samples in {time.time() - start:.0f} s")
    return x, digits


def point_audio(
    out_dir: Path, bundle: Path, point: tuple[str, int], count: int, threads: int, guidance: float | None = None
) -> tuple[np.ndarray, int, np.ndarray, float]:
    """(audio [N, L], rate, digits [N], seconds it took) of one SAMPLER:STEPS point of a bundle, as `c2d generate`
    writes it, count per digit on seeds AUDIO_SEED + k, at `guidance` (None: the bundle's default); generated once and
    cached per generator file in out_dir."""
    from c2d.models.evaluation import generate_as_users_hear
    from c2d.runtime.bundle import generator_sha256

    sampler, steps = point
    scale = "" if guidance is None else f"-g{guidance:g}"
    cache = out_dir / generator_sha256(bundle)[:12] / f"{sampler}-{steps}{scale}-n{count}-s{AUDIO_SEED}.npz"
    if not cache.is_file():
        start = time.time()
        _, run = generate_as_users_hear(bundle, count, sampler, steps, guidance, AUDIO_SEED, threads=threads)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez_compressed(tmp, audio=run.audio, rate=run.sample_rate, digits=np.array(run.digits), seconds=time.time() - start)
        tmp.replace(cache)
        print(f"{sampler}-{steps}: {len(run.audio)} clips in {time.time() - start:.0f} s", flush=True)
    data = np.load(cache)
    seconds = float(data["seconds"]) if "seconds" in data.files else float("nan")  # a set cached without its time
    return data["audio"], int(data["rate"]), data["digits"], seconds


def passes(diffs: dict) -> bool:
    """No measure's difference to the reference lies wholly on the worse side."""
    for measures in diffs.values():
        for measure, e in measures.items():
            if (e.low > 0) if WORSE_IS_HIGHER[measure] else (e.high < 0):
                return False
    return True


def difference_to(base, other) -> tuple[dict, bool]:
    """(other - base for every measure as dicts, whether other is not worse than base on any), for two ScoredSets of
    the same seeds (paired bootstrap, models/scoring.py)."""
    from c2d.models.scoring import paired_differences

    diffs = paired_differences(base, other)
    return {j: {m: e.to_dict() for m, e in ms.items()} for j, ms in diffs.items()}, passes(diffs)
