"""Which half of the Fourier vocoder's spectrum costs its quality: magnitude or phase (spectrum-swap diagnostic).

python -m c2d.benchmarks.vocoder_phase [--fourier BUNDLE|VOCODER.onnx|CHECKPOINT.pt] [--stride 10] [--threads 2]
                                       [--results benchmarks/results/vocoder_phase.json]

Copy synthesis of every stride-th FSDD test clip (never trained on) by the Fourier vocoder (the student) and by
HiFi-GAN V1 universal (its teacher). Each output's STFT (the bundle's framing: n_fft 1024, hop 256) is split into
magnitude and phase, halves of different sources are recombined and inverted (runtime.vocoder.istft), and every
combination is scored against the original recording like benchmarks/vocoders.py scores the vocoders (PESQ wide
band per clip, STOI per 10 clips joined, log-Mel L1, DNSMOS OVRL). Reading the table: if "student magnitude + recording phase"
is close to "recording round trip" the magnitudes are good; if "recording magnitude + student phase" is far below
it the phase is what the student gets wrong; "recording magnitude + teacher phase" is the ceiling of the training
recipe (recordings targets: the recording's magnitudes with the teacher's phase).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cpu_model, write_results
from c2d.benchmarks.vocoder_measures import CLIP, STOI_GROUP, fourier_onnx, hifigan_onnx, onnx_vocoder, pesq_wb, stoi_of_group, test_set, vocode_clips
from c2d.models.dnsmos import DNSMOS
from c2d.runtime.audio import DEFAULT_MEL, log_mel, stft
from c2d.runtime.generate import default_bundle
from c2d.runtime.vocoder import istft

# (row label, source of the magnitude, source of the phase); sources: recording, student, teacher
COMBINATIONS = (
    ("recording round trip (STFT, inverse STFT)", "recording", "recording"),
    ("student (Fourier vocoder) alone", "student", "student"),
    ("teacher (HiFi-GAN V1) alone", "teacher", "teacher"),
    ("student magnitude + recording phase", "student", "recording"),
    ("recording magnitude + student phase", "recording", "student"),
    ("recording magnitude + teacher phase (recipe target)", "recording", "teacher"),
)


def recombine(magnitude_of: np.ndarray, phase_of: np.ndarray) -> np.ndarray:
    """|STFT(magnitude_of)| with the angle of STFT(phase_of), inverted: two clips [CLIP] -> one clip [CLIP]."""
    a, b = stft(magnitude_of, DEFAULT_MEL), stft(phase_of, DEFAULT_MEL)
    return istft(np.abs(a) * np.exp(1j * np.angle(b)), DEFAULT_MEL, CLIP)


def scores(waves: np.ndarray, originals: np.ndarray, dnsmos: DNSMOS) -> dict:
    """Mean PESQ-wb, STOI (per STOI_GROUP clips joined) and log-Mel L1 of waves [N, CLIP] against the recordings,
    and their mean DNSMOS OVRL."""
    groups = range(0, len(waves) - STOI_GROUP + 1, STOI_GROUP)
    return {
        "dnsmos_ovrl": dnsmos.mean(waves, DEFAULT_MEL.sample_rate)["ovrl"],
        "pesq": float(np.nanmean([pesq_wb(w, r) for w, r in zip(waves, originals)])),
        "stoi": float(np.mean([stoi_of_group(waves[i : i + STOI_GROUP], originals[i : i + STOI_GROUP]) for i in groups])),
        "log_mel_l1": float(np.mean([np.mean(np.abs(log_mel(w) - log_mel(r))) for w, r in zip(waves, originals)])),
    }


def markdown(result: dict) -> str:
    lines = [
        f"Spectrum swap on {result['clips']} FSDD test clips ({result['cpu']}, {result['threads']} threads); Fourier vocoder: `{result['fourier']}`",
        "",
        "| magnitude + phase | PESQ-wb | STOI | log-Mel L1 | DNSMOS OVRL |",
        "|---|---|---|---|---|",
    ]
    for label, row in result["rows"].items():
        lines.append(f"| {label} | {row['pesq']:.3f} | {row['stoi']:.3f} | {row['log_mel_l1']:.3f} | {row['dnsmos_ovrl']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = harness.parser(__doc__, "vocoder_phase", threads=2, work="vocoders")
    ap.add_argument("--fourier", type=Path, default=default_bundle(), help="bundle, vocoder .onnx or vocoder checkpoint")
    ap.add_argument("--stride", type=int, default=10, help="every stride-th test clip (10: 30 clips)")
    args = ap.parse_args()
    if args.stride < 1:
        raise SystemExit(f"--stride must be at least 1, got {args.stride}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    mels, originals = test_set()
    mels, originals = mels[:: args.stride], originals[:: args.stride]
    waves = {
        "recording": originals,
        "student": vocode_clips(onnx_vocoder(fourier_onnx(args.fourier, args.out_dir), args.threads), mels),
        "teacher": vocode_clips(onnx_vocoder(hifigan_onnx(args.out_dir), args.threads), mels),
    }
    rows, dnsmos = {}, DNSMOS(args.threads)
    for label, magnitude, phase in COMBINATIONS:
        if magnitude == phase and magnitude != "recording":
            combined = waves[magnitude]  # the vocoder's own output, not re-analysed
        else:
            combined = np.stack([recombine(m, p) for m, p in zip(waves[magnitude], waves[phase])])
        rows[label] = scores(combined, originals, dnsmos)
        print(f"{label}: {rows[label]}", flush=True)
    result = {"cpu": cpu_model(), "threads": args.threads, "clips": len(mels), "fourier": str(args.fourier), "rows": rows}
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
