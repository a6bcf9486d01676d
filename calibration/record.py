"""`c2d calibrate`: record the generator graph's inputs at every step of real sampler runs.

A recording is a folder:
  feeds.npz         x [N, 1, n_mels, T], t [N], y [N, K], gamma [N] stacked over every graph call, and
                    offsets [calls + 1] (call i fed rows offsets[i]:offsets[i + 1]), step [calls]
  calibration.json  what was run (bundle, generator SHA-256, sampler, steps, digits, seeds, guidance scales)
                    and the activation ranges by noise level (calibration/ranges.py)

numpy + ONNX Runtime only: recordings can be made on the target device with the deployed sampler.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2d.runtime.bundle import generator_sha256, read_manifest
from c2d.runtime.contract import GENERATOR_INPUTS
from c2d.runtime.errors import C2DError
from c2d.runtime.files import InputError, OutputError, atomic_path, check_output_dir, read_json, replace_dir, staging_dir
from c2d.runtime.gate import RecordingBackend
from c2d.runtime.generate import Generator
from c2d.runtime.limits import MAX_BATCH, MAX_CALIBRATION_SEEDS
from c2d.runtime.samplers import SAMPLERS

FEEDS_FILE = "feeds.npz"
INFO_FILE = "calibration.json"


class CalibrationError(C2DError, ValueError):
    """A calibration folder that is missing, incomplete, or recorded from another bundle."""


@dataclass(frozen=True)
class Recording:
    """Every recorded graph call, stacked: call i fed rows offsets[i]:offsets[i + 1] of each array."""

    feeds: dict[str, np.ndarray]  # x [N, 1, n_mels, T], t [N], y [N, K], gamma [N]
    offsets: np.ndarray  # [calls + 1]
    step: np.ndarray  # [calls] sampler step (1-based) of each call
    info: dict  # contents of calibration.json

    @property
    def calls(self) -> int:
        return len(self.offsets) - 1

    def call(self, i: int) -> dict[str, np.ndarray]:
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return {k: v[lo:hi] for k, v in self.feeds.items()}


def stack_calls(calls: Sequence[dict[str, np.ndarray]], steps: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per-call feeds -> (stacked feeds, offsets [calls + 1], sampler step of each call)."""
    sizes = [len(c["x"]) for c in calls]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    feeds = {k: np.concatenate([c[k] for c in calls]) for k in GENERATOR_INPUTS}
    step = (np.arange(len(calls)) % steps + 1).astype(np.int64)  # each sampler chunk makes `steps` calls in order
    return feeds, offsets, step


def record(
    bundle: str | Path,
    out: str | Path,
    digits: Sequence[int] = tuple(range(10)),
    seeds: int = 1,
    guidances: Sequence[float] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Run the sampler for every digit x seed x guidance scale and write the recording to `out` (atomically)."""
    from c2d.calibration.ranges import ranges_by_noise_level
    from c2d.runtime.backends import BackendOptions

    bundle, out = Path(bundle), Path(out)
    try:
        check_output_dir(out, not_a_recording, "calibration folder")
    except OutputError as exc:
        raise CalibrationError(str(exc)) from exc
    if not digits or not 1 <= seeds <= MAX_CALIBRATION_SEEDS or len(digits) * seeds > MAX_BATCH:
        raise CalibrationError(
            f"need at least one digit and 1 to {MAX_CALIBRATION_SEEDS} seeds, at most {MAX_BATCH} samples "
            f"per guidance scale (one graph call runs them all); got {len(digits)} digits x {seeds} seeds"
        )
    if sampler is not None and sampler not in SAMPLERS:
        raise CalibrationError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    gen = Generator(bundle, "ort", BackendOptions(threads=threads))
    guidances = [gen.meta.default_guidance, 0.0] if guidances is None else list(guidances)
    sampler, steps = gen.sampler_and_steps(sampler, steps)
    recorder = RecordingBackend(gen.model)
    gen.model = recorder
    start = time.perf_counter()
    for k, gamma in enumerate(guidances):
        log(f"sampling {len(digits)} digits x {seeds} seeds at gamma {gamma} ({sampler}, {steps} steps)")
        batch = len(digits) * seeds  # one graph call per step for the whole set
        gen.sample(list(digits), count=seeds, seed=seed + k * batch, steps=steps, sampler=sampler, guidance=gamma, batch_size=batch, vocode=False)
    feeds, offsets, step = stack_calls(recorder.calls, steps)
    generator_file = bundle / str(read_manifest(bundle).generator.file)
    info = {
        "bundle": str(bundle),
        "generator_sha256": generator_sha256(bundle),
        "sampler": sampler,
        "steps": steps,
        "digits": list(map(int, digits)),
        "seeds": seeds,
        "first_seed": seed,
        "guidances": guidances,
        "calls": len(offsets) - 1,
        "rows": int(offsets[-1]),
        "seconds": round(time.perf_counter() - start, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    log(f"recorded {info['calls']} graph calls ({info['rows']} rows); measuring activation ranges by noise level")
    info["ranges_by_noise_level"] = ranges_by_noise_level(generator_file, feeds, gen.meta.sde)
    write_recording(out, feeds, offsets, step, info)
    return info


def write_recording(out: Path, feeds: dict, offsets: np.ndarray, step: np.ndarray, info: dict) -> None:
    """Both files into a temp sibling folder, then swapped in: an old recording is replaced only on success."""
    tmp = staging_dir(out)
    try:
        with atomic_path(tmp / FEEDS_FILE, ".npz") as path:
            np.savez(path, offsets=offsets, step=step, **feeds)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def not_a_recording(folder: Path) -> str | None:
    """None if `folder` holds a calibration recording and nothing else; else why it is not one."""
    # ranges-*.json: range caches that c2d before 0.1.1 wrote into the calibration folder it read
    names = {p.name for p in folder.iterdir() if not re.fullmatch(r"ranges-[a-z]+-[0-9a-f]+\.json", p.name)}
    if names != {INFO_FILE, FEEDS_FILE} or not all((folder / n).is_file() and not (folder / n).is_symlink() for n in names):
        return f"it holds {', '.join(sorted(names)[:3])}, a recording holds exactly {INFO_FILE} and {FEEDS_FILE}"
    try:
        info = read_json(folder / INFO_FILE, "calibration description")
    except InputError as exc:
        return str(exc)
    return None if isinstance(info, dict) and "generator_sha256" in info else f"{INFO_FILE} is not a recording's"


def feeds_problem(feeds: dict, offsets: np.ndarray, step: np.ndarray) -> str | None:
    """What is wrong with recorded feeds (shapes, types, finiteness, call offsets), or None."""
    x, t, y, gamma = (feeds[k] for k in GENERATOR_INPUTS)
    if x.ndim != 4 or x.shape[1] != 1 or t.ndim != 1 or y.ndim != 2 or gamma.ndim != 1:
        return f"holds arrays of the wrong rank (x {list(x.shape)}, t {list(t.shape)}, y {list(y.shape)}, gamma {list(gamma.shape)})"
    if not all(np.issubdtype(v.dtype, np.floating) and np.isfinite(v).all() for v in (x, t, y, gamma)):
        return "holds non-float or non-finite values"
    if offsets.ndim != 1 or len(offsets) < 2 or not np.issubdtype(offsets.dtype, np.integer) or offsets[0] != 0 or np.any(np.diff(offsets) <= 0):
        return "has call offsets that do not divide the recording"
    if offsets[-1] != len(x) or any(len(v) != offsets[-1] for v in (t, y, gamma)) or len(step) != len(offsets) - 1:
        return "has feeds and offsets that disagree (truncated file?)"
    return None


def load_recording(path: str | Path) -> Recording:
    """A calibration folder written by `record`; CalibrationError naming what is wrong otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise CalibrationError(f"calibration folder {path} does not exist (make one with `c2d calibrate BUNDLE -o {path}`)")
    for name in (INFO_FILE, FEEDS_FILE):
        if (path / name).exists() and not (path / name).is_file():
            raise CalibrationError(f"{path}: the calibration description or data {name} is not a regular file")
        if not (path / name).is_file():
            raise CalibrationError(f"{path} is not a calibration folder: {name} is missing")
    try:
        info = read_json(path / INFO_FILE, "calibration description", error=CalibrationError)
        with np.load(path / FEEDS_FILE) as data:
            feeds = {k: data[k] for k in GENERATOR_INPUTS}
            offsets, step = data["offsets"], data["step"]
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CalibrationError(f"{path}: unreadable calibration data ({exc})") from exc
    if not isinstance(info, dict):
        raise CalibrationError(f"{path}: {INFO_FILE} is not a recording's description (a JSON object)")
    problem = feeds_problem(feeds, offsets, step)
    if problem:
        raise CalibrationError(f"{path}: {FEEDS_FILE} {problem}; record it again with `c2d calibrate`")
    return Recording(feeds, offsets, step, {**info, "path": str(path)})


def check_matches(recording: Recording, bundle: str | Path) -> None:
    """A recording calibrates only the generator file it was recorded from."""
    bundle = Path(bundle)
    generator_file = bundle / str(read_manifest(bundle).generator.file)
    if recording.info.get("generator_sha256") != generator_sha256(bundle):
        raise CalibrationError(
            f"the calibration data was recorded from {recording.info.get('bundle')!r}, whose generator "
            f"differs from {generator_file}; record it again with `c2d calibrate {bundle} -o CALIB`"
        )
