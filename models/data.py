"""FSDD loading: WAV -> 22,050 Hz -> centred 1 s clip -> normalised log-Mel, cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from c2d.runtime.audio import DEFAULT_MEL, MelConfig, clip_features
from c2d.runtime.errors import C2DError
from c2d.runtime.files import atomic_path, cache_root

DATA_ENV = "C2D_DATA"
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fsdd"
_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav$")
TEST_INDICES = range(0, 5)  # the customary FSDD split: takes 0-4 are the test set


class DataError(C2DError, RuntimeError):
    """The data folder or one of its files cannot be used."""


@dataclass(frozen=True)
class Clip:
    path: Path
    digit: int
    speaker: str
    index: int

    @property
    def split(self) -> str:
        return "test" if self.index in TEST_INDICES else "train"


def resolve_data_dir(path: str | os.PathLike | None = None) -> Path:
    """Explicit path, else $C2D_DATA, else ../shared/data/fsdd next to the checkout."""
    chosen = Path(path or os.environ.get(DATA_ENV) or DEFAULT_DATA).resolve()
    if not chosen.is_dir():
        raise DataError(f"FSDD data folder not found: {chosen} (set --data or ${DATA_ENV})")
    return chosen


def list_clips(data_dir: str | os.PathLike | None = None) -> list[Clip]:
    """All `{digit}_{speaker}_{index}.wav` files under data_dir (or data_dir/recordings), sorted."""
    root = resolve_data_dir(data_dir)
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    clips = []
    for path in sorted(folder.glob("*.wav")):
        match = _NAME.match(path.name)
        if match:
            clips.append(Clip(path, int(match["digit"]), match["speaker"], int(match["index"])))
    if not clips:
        raise DataError(f"no FSDD recordings ({{digit}}_{{speaker}}_{{index}}.wav) in {folder}")
    return clips


def read_resampled(path: Path, sample_rate: int) -> np.ndarray:
    """Read a WAV as mono float32 and resample it to sample_rate (polyphase, exact ratio)."""
    import soundfile as sf  # imported here so that feature files load on machines without libsndfile
    from scipy.signal import resample_poly

    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for unreadable files
        raise DataError(f"cannot read audio file {path}: {exc}") from exc
    if not np.isfinite(wave).all():
        raise DataError(f"audio file {path} holds NaN or infinite samples ({int((~np.isfinite(wave)).sum())} of {wave.size})")
    if not len(wave):
        raise DataError(f"audio file {path} holds no samples")
    wave = wave.mean(axis=1)
    if sr != sample_rate:
        g = gcd(sr, sample_rate)
        wave = resample_poly(wave, sample_rate // g, sr // g).astype(np.float32)
    return wave


def _cache_key(clips: list[Clip], cfg: MelConfig) -> str:
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for clip in clips:
        stat = clip.path.stat()
        h.update(f"{clip.path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    return cache_root()


@dataclass
class Features:
    """Normalised log-Mel features x [N, 1, n_mels, n_frames] in [-1, 1] and digit labels y [N]."""

    x: np.ndarray
    y: np.ndarray
    speakers: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def load_features(
    split: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    cfg: MelConfig = DEFAULT_MEL,
    features_file: str | os.PathLike | None = None,
) -> Features:
    """Features of one split ('train', 'test' or 'all'), computed once and cached as .npz.

    features_file: a precomputed .npz (from `export_features`) used instead of the WAV folder, for machines
    that have no copy of the data.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if features_file is not None:
        return _select(_load_npz(Path(features_file), cfg), split)
    return _select(_cached_arrays(data_dir, cache_dir, cfg), split)


def _cached_arrays(data_dir, cache_dir, cfg: MelConfig) -> dict:
    """All clips' features, labels, speakers and split flags: from the cache, else computed and cached."""
    clips = list_clips(data_dir)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"fsdd-{_cache_key(clips, cfg)}.npz"
    if path.exists():
        try:
            return _load_npz(path, cfg)
        except DataError:  # a damaged cache entry (truncated, emptied) is rebuilt, not fatal
            path.unlink(missing_ok=True)
    from tqdm import tqdm

    # a bar on a terminal only (disable=None): a failure's message then stays the last line of a log
    with tqdm(
        clips, desc=f"log-Mel features of {len(clips)} clips (cached in {cache})", unit="clip", mininterval=2, leave=False, disable=None
    ) as bar:
        feats = np.stack([clip_features(read_resampled(c.path, cfg.sample_rate), cfg) for c in bar])[:, None]
    arrays = {
        "x": feats.astype(np.float32),
        "y": np.array([c.digit for c in clips], dtype=np.int64),
        "speakers": np.array([c.speaker for c in clips]),
        "is_test": np.array([c.split == "test" for c in clips]),
    }
    _atomic_savez(path, arrays)
    return arrays


def _load_npz(path: Path, cfg: MelConfig = DEFAULT_MEL) -> dict:
    """A features file, checked: a regular .npz holding x [N, 1, n_mels, n_frames] finite in [-1, 1] for this front
    end, labels y in 0-9, and per-clip speakers and split flags; DataError naming the file and the problem."""
    import stat
    import zipfile

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"cannot read the feature file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        raise DataError(f"the feature file {path} is not a regular file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise DataError(f"the feature file {path} is a single array (.npy); `c2d features -o F.npz` writes the .npz c2d reads")
        with data:
            arrays = {k: data[k] for k in ("x", "y", "speakers", "is_test")}
    except DataError:
        raise
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"unusable feature file {path}: {exc}") from exc
    x, y = arrays["x"], arrays["y"]
    n = len(y)
    want = (1, cfg.n_mels, cfg.n_frames)
    if x.ndim != 4 or tuple(x.shape[1:]) != want or len(x) != n:
        raise DataError(
            f"the feature file {path} holds x of shape {list(x.shape)}; this front end needs [{n}, {', '.join(map(str, want))}] "
            f"({cfg.n_mels} mel bands, {cfg.n_frames} frames)"
        )
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise DataError(f"the feature file {path} holds non-finite or non-float features")
    if not np.issubdtype(y.dtype, np.integer) or (n and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"the feature file {path} holds labels outside 0-9")
    if len(arrays["speakers"]) != n or len(arrays["is_test"]) != n:
        raise DataError(f"the feature file {path} holds {n} labels but another number of speakers or split flags")
    return arrays


def _select(arrays: dict, split: str) -> Features:
    mask = np.ones(len(arrays["y"]), bool) if split == "all" else (arrays["is_test"] == (split == "test"))
    return Features(arrays["x"][mask], arrays["y"][mask], arrays["speakers"][mask])


def _atomic_savez(path: Path, arrays: dict) -> None:
    with atomic_path(path, ".npz") as tmp:  # unique per process: ranks may race
        np.savez_compressed(tmp, **arrays)


def export_features(out: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """Write all features (with split flags) to one .npz, e.g. to carry to a machine without the WAVs."""
    out = Path(out)
    _atomic_savez(out, _cached_arrays(data_dir, None, DEFAULT_MEL))
    return out


N_DIGITS = 10


def parse_digit_list(text: str) -> tuple[int, ...]:
    """ "3,5,7" -> (3, 5, 7); DataError naming a value that is not a digit 0-9 (or a repeated one)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise DataError(f"--train-digits {text!r} names no digit; give e.g. 3,5,7")
    digits = []
    for part in parts:
        if not part.isdigit() or not 0 <= int(part) < N_DIGITS:
            raise DataError(f"--train-digits: {part!r} is not a digit 0-{N_DIGITS - 1}")
        if int(part) in digits:
            raise DataError(f"--train-digits: digit {part} is named twice")
        digits.append(int(part))
    return tuple(sorted(digits))


def _share(sizes: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split `total` over groups in proportion to `sizes` (largest remainder, ties by rng), at most each size; every
    group gets at least one while total allows, else `total` groups chosen at random get one each."""
    if total < len(sizes):
        counts = np.zeros(len(sizes), int)
        counts[rng.permutation(len(sizes))[:total]] = 1
        return counts
    quota = total * sizes / sizes.sum()
    counts = np.minimum(sizes, np.maximum(1, np.floor(quota).astype(int)))
    order = np.lexsort((rng.random(len(sizes)), -(quota - np.floor(quota))))
    while counts.sum() < total:
        for k in order:
            if counts.sum() < total and counts[k] < sizes[k]:
                counts[k] += 1
    return counts


def _stratified(features: Features, keep: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """round(fraction * n) clips: shared over digits, then within each digit over its speakers."""
    chosen = np.zeros(len(features), bool)
    digits = np.unique(features.y[keep])
    per_digit = _share(np.array([(keep & (features.y == d)).sum() for d in digits]), max(1, int(round(fraction * keep.sum()))), rng)
    for digit, n_digit in zip(digits, per_digit):
        in_digit = keep & (features.y == digit)
        speakers = np.unique(features.speakers[in_digit])
        groups = [np.flatnonzero(in_digit & (features.speakers == s)) for s in speakers]
        for group, n in zip(groups, _share(np.array([len(g) for g in groups]), int(n_digit), rng)):
            chosen[rng.permutation(group)[:n]] = True
    return chosen


def train_subset(features: Features, digits: tuple[int, ...] | None = None, fraction: float | None = None, seed: int = 0) -> tuple[Features, dict]:
    """The clips of `digits` only, then a seeded `fraction` of them stratified by digit and speaker: round(fraction *
    n) clips in all, shared over the digits and then over each digit's speakers in proportion (largest remainder,
    ties broken by the seed). Returns the subset and a record of it for the checkpoint and the bundle:
    {"digits", "fraction", "seed", "clips", "of", "per_digit"}."""
    if fraction is not None and (isinstance(fraction, bool) or not 0 < float(fraction) <= 1):
        raise DataError(f"--train-fraction must lie in (0, 1], got {fraction}")
    keep = np.ones(len(features), bool) if digits is None else np.isin(features.y, list(digits))
    if fraction is not None and float(fraction) < 1:
        keep = _stratified(features, keep, float(fraction), np.random.default_rng(seed))
    if not keep.any():
        raise DataError(f"the training subset is empty: no clips of digits {list(digits or [])} in {len(features)} clips")
    subset = Features(features.x[keep], features.y[keep], features.speakers[keep])
    info = {
        "digits": None if digits is None else [int(d) for d in digits],
        "fraction": None if fraction is None else float(fraction),
        "seed": int(seed),
        "clips": int(keep.sum()),
        "of": len(features),
        "per_digit": {str(d): int((subset.y == d).sum()) for d in range(N_DIGITS)},
    }
    return subset, info


def describe_subset(info: dict | None) -> str:
    """ "all training clips" or e.g. "digits 3,5,7: 810 of 2700 clips"."""
    if not info:
        return "all training clips"
    parts = []
    if info.get("digits") is not None:
        parts.append("digits " + ",".join(map(str, info["digits"])))
    if info.get("fraction") is not None:
        parts.append(f"fraction {info['fraction']:g} (seed {info.get('seed', 0)})")
    return f"{', '.join(parts)}: {info.get('clips')} of {info.get('of')} clips"
