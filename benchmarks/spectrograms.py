"""Look at the audio: log-Mel spectrograms of real test recordings beside generated sets, one column per digit.

python -m c2d.benchmarks.spectrograms --set NAME=AUDIO.npz ... [--digits 0 3 7 9] [--results benchmarks/results/spectrograms.json]

Every AUDIO.npz is a set of clips as `c2d generate` writes them (arrays audio [N, L], rate, digits [N]: the cache
files of benchmarks/default_choice.py). Each cell is the natural-log Mel of the first clip of that digit, re-analysed
from the audio at 22,050 Hz, on one colour scale for the whole figure; the first row is the first test recording of
that digit, peak-normalised to -1 dBFS like the generated clips. Beside the figure: per set, the mean log-Mel in four
frequency bands over the clips' loud frames (the frames within 30 dB of each clip's loudest), against the real test
recordings' -- a spectral balance a listener hears as muffled (too little top) or hissy (too much).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cpu_model, write_results
from c2d.models.data import list_clips, read_resampled
from c2d.runtime.audio import DEFAULT_MEL, log_mel

RATE = 22050
BANDS = {"0-20": (0, 20), "20-40": (20, 40), "40-60": (40, 60), "60-80": (60, 80)}  # Mel band indices of 80
PEAK = 10 ** (-1 / 20)  # -1 dBFS, as c2d generate writes
LOUD_NATS = 30 / (20 / np.log(10))  # 30 dB in natural-log units of magnitude


def parse_set(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=AUDIO.npz with AUDIO.npz an existing file")
    return name, Path(path)


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return audio
    from scipy.signal import resample_poly

    g = np.gcd(rate, RATE)
    return resample_poly(audio, RATE // g, rate // g, axis=-1).astype(np.float32)


def real_set(digits: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(audio [N, L] at RATE, digits [N]) of FSDD's test recordings, cut or zero-padded to 1 s and peak-normalised to
    -1 dBFS as `c2d generate` writes its clips, so levels compare."""
    clips = sorted((c for c in list_clips() if c.split == "test"), key=lambda c: (c.digit, c.speaker, c.index))
    waves = []
    for c in clips:
        w = read_resampled(c.path, RATE)[:RATE]
        waves.append(np.pad(w, (0, RATE - len(w))) * (PEAK / max(float(np.abs(w).max()), 1e-9)))
    return np.stack(waves), np.array([c.digit for c in clips])


def mels(audio: np.ndarray) -> np.ndarray:
    """[N, L] -> [N, n_mels, frames]."""
    return np.stack([log_mel(w, DEFAULT_MEL) for w in audio])


def band_balance(m: np.ndarray) -> dict[str, float]:
    """Mean log-Mel per band over each clip's loud frames (within LOUD_NATS of its loudest frame)."""
    frame_level = m.mean(axis=1)  # [N, T]
    loud = frame_level >= frame_level.max(axis=1, keepdims=True) - LOUD_NATS
    out = {}
    for name, (lo, hi) in BANDS.items():
        band = m[:, lo:hi, :].mean(axis=1)  # [N, T]
        out[name] = float((band * loud).sum() / loud.sum())
    return out


def plot(rows: dict[str, np.ndarray], digits: list[int], path: Path) -> None:
    from c2d.runtime.files import pyplot, save_figure

    fig, axes = pyplot().subplots(len(rows), len(digits), figsize=(2.2 * len(digits), 1.9 * len(rows)), squeeze=False)
    low, high = DEFAULT_MEL.norm_low, DEFAULT_MEL.norm_high
    for i, (name, cells) in enumerate(rows.items()):
        for j, d in enumerate(digits):
            ax = axes[i][j]
            ax.imshow(cells[j], origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"digit {d}", fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def markdown(result: dict) -> str:
    lines = [
        f"Spectral balance: mean natural-log Mel over loud frames, per band of 80 ({result['cpu']}, {result['date']}); "
        "difference to the real test recordings in brackets.",
        "",
        "| set | clips | " + " | ".join(f"bands {b}" for b in BANDS) + " |",
        "|---|---|" + "---|" * len(BANDS),
    ]
    real = result["sets"]["real test recordings"]["bands"]
    for name, row in result["sets"].items():
        cells = [f"{row['bands'][b]:.2f}" + ("" if name == "real test recordings" else f" ({row['bands'][b] - real[b]:+.2f})") for b in BANDS]
        lines.append(f"| {name} | {row['clips']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = harness.parser(__doc__, "spectrograms")
    ap.add_argument("--set", dest="sets", type=parse_set, action="append", required=True, help="NAME=AUDIO.npz (repeatable)")
    ap.add_argument("--digits", type=int, nargs="+", default=[0, 3, 7, 9])
    args = ap.parse_args()
    audio, digits = real_set(args.digits)
    sets = {"real test recordings": (audio, digits)}
    for name, path in args.sets:
        data = np.load(path)
        sets[name] = (resample(data["audio"], int(data["rate"])), data["digits"])
    sets_args = " ".join(f"--set '{n}={p}'" for n, p in args.sets)
    command = f"python -m c2d.benchmarks.spectrograms {sets_args} --digits {' '.join(map(str, args.digits))}"
    result = {"sets": {}, "command": command, "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"), "figure": str(args.results.with_suffix(".png"))}
    cells = {}
    for name, (audio, ds) in sets.items():
        m = mels(audio)
        missing = [d for d in args.digits if not (ds == d).any()]
        if missing:
            raise SystemExit(f"set {name!r} has no clip of digit {missing[0]}")
        cells[name] = [m[np.flatnonzero(ds == d)[0]] for d in args.digits]
        result["sets"][name] = {"clips": len(audio), "bands": band_balance(m)}
    plot(cells, args.digits, args.results.with_suffix(".png"))
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
