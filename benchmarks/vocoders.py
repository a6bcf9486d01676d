"""The three vocoders side by side in one run: Griffin-Lim (numpy), HiFi-GAN V1 universal (ONNX) and the Fourier
vocoder distilled from it (ONNX), on this machine.

python -m c2d.benchmarks.vocoders [--fourier BUNDLE|VOCODER.onnx|CHECKPOINT.pt] [--extra NAME=SOURCE ...] [--threads 2]
                                  [--rounds 7] [--gen-count 100] [--results benchmarks/results/vocoders.json]

1. Size: the ONNX file (Griffin-Lim has no weights) and the parameter count.
2. Speed: ms per second of audio at batch 1 and batch 8 on real test mels, the vocoders interleaved round by round
   (median over rounds), ONNX Runtime CPU with --threads threads; Griffin-Lim as the product runs it (32 iterations,
   one BLAS thread).
3. Copy synthesis of FSDD's 300 test clips (never trained on): the clip's log-Mel in, the waveform compared with the
   original recording (both 1 s at 22,050 Hz): log-Mel L1, multi-resolution STFT distance (spectral convergence +
   log-magnitude L1 at n_fft 512/1024/2048), PESQ wide band per clip and STOI per 10 clips joined, at 16 kHz
   (`pesq`, `pystoi`), and DNSMOS P.835 SIG and OVRL per clip (benchmarks/dnsmos.py; no reference needed, so the
   recordings themselves are scored too).
4. Generated mels: gen-count samples per digit from the shipped generator (its default sampler, seeds 20,000 + k,
   apart from the vocoder's training seeds), vocoded; the independent evaluator's accuracy on that audio re-analysed
   with the front end (with its binomial standard error) beside its accuracy on the mels themselves, and DNSMOS of
   the audio (what a listener of `c2d generate` gets).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cached_samples, cpu_model, write_results
from c2d.benchmarks.vocoder_measures import (
    CLIP,
    GEN_SEED,
    copy_synthesis,
    dnsmos_rows,
    fourier_onnx,
    generated_audio,
    hifigan_onnx,
    interleaved_speed,
    mean_and_sem,
    onnx_vocoder,
    test_set,
)
from c2d.models.dnsmos import DNSMOS
from c2d.runtime.audio import denormalize, log_mel
from c2d.runtime.generate import default_bundle
from c2d.runtime.vocoder import GriffinLim


def plot_examples(path: Path, vocoders: dict, mels: np.ndarray, originals: np.ndarray, index: int) -> None:
    from c2d.runtime.files import pyplot, save_figure

    plt = pyplot()
    rows = {"original recording": originals[index]} | {name: v(mels[index : index + 1])[0, :CLIP] for name, v in vocoders.items()}
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.2), sharey=True)
    for ax, (name, wave) in zip(axes, rows.items()):
        ax.imshow(log_mel(wave), origin="lower", aspect="auto", vmin=-11.5, vmax=2.0, cmap="magma")
        ax.set_title(name)
        ax.set_xlabel("frame")
    axes[0].set_ylabel("mel band")
    fig.suptitle(f"copy synthesis of test clip {index}: log-Mel of each waveform")
    save_figure(fig, path)


def markdown(result: dict) -> str:
    names = list(result["vocoders"])
    v = result["vocoders"]
    lines = [
        f"CPU: {result['cpu']}, {result['threads']} threads. Speed: ms per second of audio, median of {result['rounds']} "
        "interleaved rounds; quality: 300 FSDD test clips (copy synthesis, mean ± s.e.) and "
        f"{result['generated']['n']} generated mels.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def row(label, fmt):
        lines.append(f"| {label} | " + " | ".join(fmt(v[n]) for n in names) + " |")

    row("size (MB)", lambda r: f"{r['bytes'] / 1e6:.2f}" if r["bytes"] else "0 (no weights)")
    row("parameters (M)", lambda r: f"{r['params'] / 1e6:.2f}")
    for b in result["batches"]:
        row(f"ms per audio s, batch {b}", lambda r, b=b: f"{r['speed'][str(b)]:.1f}")
    for key, label in (
        ("log_mel_l1", "log-Mel L1 (lower is better)"),
        ("mr_stft", "MR-STFT distance (lower)"),
        ("pesq", "PESQ wide band (higher)"),
        ("stoi", "STOI (higher)"),
        ("dnsmos_sig", "DNSMOS SIG (higher)"),
        ("dnsmos_ovrl", "DNSMOS OVRL (higher)"),
    ):
        row(label, lambda r, key=key: f"{r['copy'][key]['mean']:.3f} ± {r['copy'][key]['sem']:.3f}")
    row("evaluator accuracy on generated audio", lambda r: f"{r['generated']['accuracy'] * 100:.1f} ± {r['generated']['sem'] * 100:.1f} %")
    for key, label in (("dnsmos_sig", "DNSMOS SIG, generated audio"), ("dnsmos_ovrl", "DNSMOS OVRL, generated audio")):
        row(label, lambda r, key=key: f"{r['generated'][key]['mean']:.3f} ± {r['generated'][key]['sem']:.3f}")
    g, rec = result["generated"], result["recordings_dnsmos"]
    lines += [
        "",
        f"The evaluator on the generated mels themselves (no vocoder): {g['accuracy'] * 100:.1f} ± {g['sem'] * 100:.1f} %. "
        f"DNSMOS of the 300 test recordings themselves: SIG {rec['dnsmos_sig']['mean']:.3f}, OVRL {rec['dnsmos_ovrl']['mean']:.3f}.",
    ]
    ratios = result["ratios"]
    lines += ["", "Speed ratios (same run): " + "; ".join(f"{k} {x:.1f}x" for k, x in ratios.items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = harness.parser(__doc__, "vocoders", threads=2, rounds=7, work=True, bundle=True)
    ap.add_argument("--fourier", type=Path, default=default_bundle(), help="bundle, vocoder .onnx or vocoder checkpoint")
    ap.add_argument(
        "--extra", nargs="*", default=[], metavar="NAME=SOURCE", help="more Fourier vocoders (bundle, .onnx or checkpoint) measured beside the others"
    )
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--gen-count", type=int, default=100, help="generated samples per digit")
    ap.add_argument("--evaluator", type=Path, default=None, help="[default: the shipped evaluator]")
    ap.add_argument("--plot", type=Path, default=Path("benchmarks/results/vocoders.png"))
    args = harness.parse(ap)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    from c2d.models.evaluator import generate_normalised, load_evaluator

    paths = {"fourier": fourier_onnx(args.fourier, args.out_dir), "hifigan-v1": hifigan_onnx(args.out_dir)}
    for item in args.extra:
        name, _, source = item.partition("=")
        if not source:
            raise SystemExit(f"--extra {item!r}: want NAME=SOURCE")
        paths[name] = fourier_onnx(Path(source), args.out_dir)
    vocoders = {"griffin-lim": GriffinLim(), **{name: onnx_vocoder(p, args.threads) for name, p in paths.items()}}
    mels, originals = test_set()
    dnsmos = DNSMOS(args.threads)
    print(f"speed: {args.rounds} interleaved rounds x {args.calls} calls, batches {args.batches}")
    speed = {b: interleaved_speed(vocoders, mels, b, args.rounds, args.calls) for b in args.batches}
    evaluator = load_evaluator(args.evaluator or Path(__file__).resolve().parents[1] / "models" / "checkpoints" / "evaluator.pt")
    cache = args.out_dir / f"generated-n{args.gen_count}-s{GEN_SEED}.npz"
    x, digits = cached_samples(
        cache, lambda: generate_normalised(args.bundle, args.gen_count, None, None, None, GEN_SEED, threads=args.threads), "generated", print
    )
    gen_mels = denormalize(x[:, 0])
    result = {
        "cpu": cpu_model(),
        "threads": args.threads,
        "rounds": args.rounds,
        "batches": args.batches,
        "vocoders": {},
        "generated": generated_audio(None, gen_mels, digits, evaluator, dnsmos),
        "recordings_dnsmos": mean_and_sem(dnsmos_rows(originals, dnsmos)),
    }
    for name, v in vocoders.items():
        start = time.time()
        path = paths.get(name)
        result["vocoders"][name] = {
            "bytes": path.stat().st_size if path else 0,
            "params": v.meta.params if hasattr(v, "meta") else 0,
            "speed": {str(b): speed[b][name] for b in args.batches},
            "copy": copy_synthesis(v, mels, originals, dnsmos),
            "generated": generated_audio(v, gen_mels, digits, evaluator, dnsmos),
        }
        print(f"{name}: quality measured in {time.time() - start:.0f} s")
    result["ratios"] = {
        f"fourier vs {other}, batch {b}": speed[b][other] / speed[b]["fourier"] for other in ("hifigan-v1", "griffin-lim") for b in args.batches
    }
    if args.plot:
        plot_examples(args.plot, vocoders, mels, originals, index=7)
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
