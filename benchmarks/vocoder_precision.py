"""Is a bundle's vocoder at reduced precision audibly the same? Each backend x precision against ONNX Runtime fp32.

python -m c2d.benchmarks.vocoder_precision [--bundle BUNDLE] [--stride 10] [--threads 2]
                                           [--results benchmarks/results/vocoder_precision.json]

Copy synthesis of every stride-th FSDD test clip by the bundle's vocoder on every installed CPU backend x precision
(the deployment profile's candidates). Each output is compared with ONNX Runtime fp32's output of the same mel: the
parity gate's measure (worst waveform error relative to the peak, on the bundle's own vocoder reference and per clip
here), the log-Mel L1 between the two outputs, and PESQ (wide band) with the fp32 output as the reference; and with
the recording, as benchmarks/vocoders.py scores vocoders: PESQ and DNSMOS OVRL. Reading it: a reduced precision
that misses the waveform budget while its log-Mel L1 and PESQ against fp32 are at the round-trip level changes the
samples, not the sound.
"""

from __future__ import annotations

import numpy as np

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cpu_model, write_results
from c2d.benchmarks.vocoder_measures import CLIP, pesq_wb, test_set
from c2d.models.dnsmos import DNSMOS
from c2d.runtime.audio import DEFAULT_MEL, log_mel
from c2d.runtime.backends import BackendUnavailable, open_backend
from c2d.runtime.bundle import bundle_file, read_manifest
from c2d.runtime.deployment import available_candidates
from c2d.runtime.parity import VOCODER_BUDGETS, check_vocoder_parity


def vocode(backend, mels: np.ndarray) -> np.ndarray:
    """[N, n_mels, T] -> [N, CLIP], one clip per call (batch 1, as c2d generate runs it)."""
    return np.concatenate([backend.run({"mel": mels[i : i + 1]}, ["wave"])[0].reshape(1, -1)[:, :CLIP] for i in range(len(mels))])


def compare(waves: np.ndarray, reference: np.ndarray, originals: np.ndarray, dnsmos: DNSMOS) -> dict:
    worst = np.abs(waves - reference).max(axis=1) / np.maximum(np.abs(reference).max(axis=1), 1e-12)
    return {
        "waveform_error_median": float(np.median(worst)),
        "waveform_error_max": float(worst.max()),
        "log_mel_l1_vs_fp32": float(np.mean([np.mean(np.abs(log_mel(w) - log_mel(r))) for w, r in zip(waves, reference)])),
        "pesq_vs_fp32": float(np.nanmean([pesq_wb(w, r) for w, r in zip(waves, reference)])),
        "pesq_vs_recording": float(np.nanmean([pesq_wb(w, r) for w, r in zip(waves, originals)])),
        "dnsmos_ovrl": dnsmos.mean(waves, DEFAULT_MEL.sample_rate)["ovrl"],
    }


def markdown(result: dict) -> str:
    lines = [
        f"Vocoder of `{result['bundle']}` on {result['clips']} FSDD test clips ({result['cpu']}, {result['threads']} threads); "
        "every row against ONNX Runtime fp32's output of the same mel.",
        "",
        "| backend | precision | parity on the bundle's reference (budget) | worst waveform error, median / max clip | "
        "log-Mel L1 vs fp32 | PESQ vs fp32 | PESQ vs recording | DNSMOS OVRL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in result["rows"].items():
        backend, precision = label.split()
        lines.append(
            f"| {backend} | {precision} | {row['parity']:.1e} ({row['parity_budget']:.0e}) | {row['waveform_error_median']:.1e} / "
            f"{row['waveform_error_max']:.1e} | {row['log_mel_l1_vs_fp32']:.4f} | {row['pesq_vs_fp32']:.2f} | "
            f"{row['pesq_vs_recording']:.3f} | {row['dnsmos_ovrl']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = harness.parser(__doc__, "vocoder_precision", threads=2, bundle=True)
    ap.add_argument("--stride", type=int, default=10, help="every stride-th test clip (10: 30 clips)")
    args = harness.parse(ap)
    if args.stride < 1:
        raise SystemExit(f"--stride must be at least 1, got {args.stride}")
    entry = read_manifest(args.bundle).vocoder
    if not entry.file:
        raise SystemExit(f"{args.bundle}'s vocoder is {entry.kind}, which runs in numpy at one precision")
    path = bundle_file(args.bundle, entry.file)
    mels, originals = test_set()
    mels, originals = mels[:: args.stride], originals[:: args.stride]
    dnsmos, rows, reference = DNSMOS(args.threads), {}, None
    for cand in available_candidates():  # ORT fp32 first: the reference of every row
        try:
            backend = open_backend(cand.backend, path, cand.options(args.threads))
        except BackendUnavailable as exc:
            print(f"{cand.label}: unavailable ({exc})")
            continue
        waves = vocode(backend, mels)
        reference = waves if reference is None else reference
        budget = VOCODER_BUDGETS[cand.precision]
        rows[cand.label] = {
            "parity": check_vocoder_parity(backend, args.bundle, budget),
            "parity_budget": budget,
            **compare(waves, reference, originals, dnsmos),
        }
        print(f"{cand.label}: {rows[cand.label]}", flush=True)
    result = {"cpu": cpu_model(), "threads": args.threads, "clips": len(mels), "bundle": str(args.bundle), "rows": rows}
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
