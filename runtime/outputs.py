"""Audio and spectrogram files, written all together or not at all: what `c2d generate` and `c2d vocode` write, usable
from Python.

The format follows the extension (.wav: 16-bit PCM WAV, .flac: 16-bit FLAC); any other extension is refused before
any work is done. Every file is staged under a temporary name and renamed into place only when all of them are
written (runtime.files.atomic_files).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from c2d.runtime.audio import resample, wave_problems
from c2d.runtime.files import OutputError, atomic_files, output_target, pyplot
from c2d.runtime.generate import DEFAULT_PEAK_DBFS, parse_digit

# extension -> (soundfile format, subtype)
AUDIO_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}


def audio_format(path: str | os.PathLike) -> tuple[str, str]:
    """(format, subtype) for `path`'s extension; OutputError naming the extensions c2d writes otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in AUDIO_FORMATS:
        known = " or ".join(AUDIO_FORMATS)
        got = f"'{Path(path).suffix}'" if suffix else "no extension"
        raise OutputError(f"{path}: the extension names the audio format; c2d writes {known}, got {got}")
    return AUDIO_FORMATS[suffix]


def numbered_paths(out: Path, names: Sequence[str]) -> list[Path]:
    """OUT itself for one file; OUT-stem-<name>.ext for several (the extension of OUT, its format)."""
    out = Path(out)
    if len(names) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{name}{out.suffix}") for name in names]


def sample_paths(out: Path, digits: Sequence[int], seeds: Sequence[int], labels: Sequence[str]) -> list[Path]:
    """OUT for a single sample; OUT-stem-<label>-<seed>.ext for several."""
    return numbered_paths(out, [f"{labels[d]}-{s}" for d, s in zip(digits, seeds)])


def check_audio_outputs(paths: Sequence[Path]) -> None:
    """Refuse, before any work is done, outputs with an unknown extension or that cannot be regular files."""
    for path in paths:
        if path.suffix.lower() != ".png":
            audio_format(path)
        output_target(path)


def write_audio(tmp: Path, path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """One 16-bit file at its temporary name, in the format of `path`'s extension; errors name `path`."""
    import soundfile as sf

    fmt, subtype = audio_format(path)
    try:
        sf.write(tmp, wave, sample_rate, subtype=subtype, format=fmt)
    except sf.SoundFileError as exc:  # libsndfile's errors are not OSErrors
        raise OutputError(f"cannot write {path}: {str(exc).strip() or 'libsndfile could not open it'}") from exc


def spectrogram_figure(log_mels: Sequence[np.ndarray], titles: Sequence[str]):
    """One log-Mel panel ([n_mels, T]) per sample."""
    fig, axes = pyplot().subplots(1, len(log_mels), figsize=(3 * len(log_mels), 2.6), squeeze=False)
    for ax, mel, title in zip(axes[0], log_mels, titles):
        ax.imshow(mel, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame")
    axes[0][0].set_ylabel("mel band")
    fig.tight_layout()
    return fig


def write_audio_files(paths: Sequence[Path], audio: np.ndarray, sample_rate: int, figure=None) -> None:
    """audio [N, samples] to N files (and the figure's PNG to one more path, the last): all or none; if any step
    fails, earlier files at those paths are left as they were."""
    check_audio_outputs(paths)
    with atomic_files(paths) as tmps:
        for path, tmp, wave in zip(paths, tmps, audio):
            write_audio(tmp, path, wave, sample_rate)
        if figure is not None:
            figure.savefig(tmps[len(audio)], dpi=100, format="png")
    if figure is not None:
        pyplot().close(figure)


@dataclass
class WrittenRun:
    """What write_generation wrote and how the run went."""

    paths: list[Path]
    png: Path | None
    sample_rate: int
    sampler: str = ""
    steps: int = 0
    guidance: float = 0.0
    sampling_seconds: float = 0.0
    vocoder_seconds: float = 0.0
    problems: list[tuple[Path, str]] = field(default_factory=list)  # (file, what is wrong with its audio)
    warnings: list[str] = field(default_factory=list)  # what the sampler warned about


def write_generation(
    gen,
    digits: Sequence[int | str],
    out: str | os.PathLike,
    count: int = 1,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    guidance: float | None = None,
    sample_rate: int | None = None,
    peak_dbfs: float | None = DEFAULT_PEAK_DBFS,
    plot: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> WrittenRun:
    """Generate `count` samples of each digit with the Generator `gen` and write one audio file per sample
    (OUT, or OUT-<label>-<seed>.ext for several), plus OUT.png with their spectrograms when `plot`.

    Each batch is written to its temporary file as soon as it is made, so memory grows with the batch, not with
    `count`; the files are renamed into place together at the end, or none is. Each file's peak is at peak_dbfs
    (None keeps the model's level, clipped to full scale)."""
    out = Path(out)
    wanted = [parse_digit(d, gen.meta.labels) for d in digits for _ in range(count)]
    paths = sample_paths(out, wanted, [seed + k for k in range(len(wanted))], gen.meta.labels)
    png = out.with_suffix(".png") if plot else None
    if plot:
        pyplot()  # ImportError naming matplotlib, before any work
    check_audio_outputs(paths + ([png] if png else []))
    run = WrittenRun(paths, png, sample_rate or gen.sample_rate)
    mels, titles, done = [], [], 0
    with atomic_files(paths + ([png] if png else [])) as tmps, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for part in gen.sample_batches(list(digits), count, seed, steps, sampler, guidance, on_step=on_step, peak_dbfs=peak_dbfs):
            for wave, raw in zip(resample(part.audio, part.sample_rate, run.sample_rate), part.audio):
                write_audio(tmps[done], paths[done], wave, run.sample_rate)
                run.problems += [(paths[done], p) for p in wave_problems(raw, part.sample_rate, gen.meta.mel.clip_seconds)]
                done += 1
            if plot:
                mels += list(part.log_mel)
                titles += [f"{gen.meta.labels[d]} (seed {s})" for d, s in zip(part.digits, part.seeds)]
            run.sampling_seconds += part.sampling_seconds
            run.vocoder_seconds += part.vocoder_seconds
            run.sampler, run.steps, run.guidance = part.sampler, part.steps, part.guidance
        if plot:
            figure = spectrogram_figure(mels, titles)
            figure.savefig(tmps[-1], dpi=100, format="png")
            pyplot().close(figure)
    run.warnings = [str(w.message) for w in caught]
    return run
