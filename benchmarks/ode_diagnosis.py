"""Why the probability-flow ODE samplers fail on our generators, measured (docs/samplers.md).

python -m c2d.benchmarks.ode_diagnosis --bundle shipped=runtime/bundles/small --bundle two-model=DIR [--bundle NAME=DIR ...]
                                       [--count 10] [--results benchmarks/results/ode_diagnosis.json]

1. Radial response: eps(c z, t) for z ~ N(0, I) scaled by c. The exact eps is about c z at high noise (x_t is almost
   all noise), so the slope <eps, z> / |z|^2 should follow c; a slope stuck near 1 means the network ignores how
   much noise energy x_t carries.
2. Per bundle: ancestral sampling against DDIM (eta 0) and DPM-Solver++(2M) from the same x_T, 25 log-SNR steps,
   guided; evaluator
   accuracy, FID and the share of near-silent values.
3. First bundle only: DDIM from each x_T rescaled to rms 0.997, 1 and 1.003 (0.3 % apart), and hybrids that are
   stochastic above a switch time and deterministic below it, or the other way round.
4. First bundle only: the rms of x_t and of the predicted eps along four DDIM trajectories.
Every sample set uses count samples per digit on the same seeds (1000 + k).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from importlib.resources import files
from pathlib import Path

import numpy as np

from c2d.benchmarks import harness
from c2d.benchmarks.harness import cpu_model, write_results
from c2d.models.data import load_features
from c2d.models.evaluator import Reference, evaluate_samples, load_evaluator
from c2d.runtime import load
from c2d.runtime.audio import denormalize, normalize
from c2d.runtime.backends import BackendOptions
from c2d.runtime.samplers import SAMPLERS, ddim, draw_noise, logsnr_schedule

STEPS, SEED = 25, 1000
SCALES, TIMES = (0.9, 1.1, 1.3), (1.0, 0.6, 0.4)


def radial_response(gen) -> dict:
    z = np.random.default_rng(0).standard_normal((8, 1, 80, 88)).astype(np.float32)
    y = np.eye(len(gen.meta.labels), dtype=np.float32)[np.arange(8) % len(gen.meta.labels)]
    out = {}
    for t in TIMES:
        for c in SCALES:
            feeds = {"x": c * z, "t": np.full(8, t, np.float32), "y": y, "gamma": np.zeros(8, np.float32)}
            eps = gen.model.run(feeds, ["eps"])[0]
            out[f"t={t:g} c={c:g}"] = float((eps * z).sum() / (z * z).sum())
    return out


def run_sampler(gen, fn, count: int, x_rms: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """fn(eps_fn, x_T, noise, ts, sde) on every digit x count seeds, in chunks of 50, each x_T rescaled to rms x_rms
    if given; normalised log-Mels."""
    digits = [d for d in range(len(gen.meta.labels)) for _ in range(count)]
    seeds = [SEED + k for k in range(len(digits))]
    ts = logsnr_schedule(STEPS, gen.meta.sde)
    out = []
    for lo in range(0, len(digits), 50):
        x_T, noise = draw_noise(seeds[lo : lo + 50], STEPS, (1, gen.meta.mel.n_mels, gen.meta.n_frames))
        if x_rms is not None:
            x_T = x_T * (x_rms / np.sqrt((x_T**2).mean(axis=(1, 2, 3), keepdims=True)))
        out.append(fn(gen.eps_fn(digits[lo : lo + 50], gen.meta.default_guidance), x_T, noise, ts, gen.meta.sde))
    x0 = np.concatenate(out)[:, 0]  # [N, n_mels, T]; through the log-Mel and back, as Generator.sample's output is
    return normalize(denormalize(x0, gen.meta.mel), gen.meta.mel)[:, None], np.array(digits)


def trajectories(gen, seeds=(1072, 1093, 1000, 1025)) -> list[dict]:
    digits = [(s - SEED) // 10 for s in seeds]
    x_T, _ = draw_noise(list(seeds), 0, (1, gen.meta.mel.n_mels, gen.meta.n_frames))
    ts = logsnr_schedule(STEPS, gen.meta.sde)
    rows, eps_fn = [], gen.eps_fn(digits, gen.meta.default_guidance)

    def traced(x, t):
        eps = eps_fn(x, t)
        rows.append(
            {
                "t": t,
                "x_rms": np.sqrt((x**2).mean(axis=(1, 2, 3))).round(3).tolist(),
                "eps_rms": np.sqrt((eps**2).mean(axis=(1, 2, 3))).round(3).tolist(),
            }
        )
        return eps

    SAMPLERS["ddim"].fn(traced, x_T, None, ts, gen.meta.sde)
    return rows


def markdown(result: dict) -> str:
    names = list(result["bundles"])
    keys = list(next(iter(result["radial_slope"].values())))
    lines = [
        "Radial response: slope <eps(c z), z> / |z|^2 (exact: about c at t = 1).",
        "",
        "| t, c | " + " | ".join(names) + " | exact |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{result['radial_slope'][n][k]:.3f}" for n in names) + f" | ~{k.split('c=')[1]} |")
    lines += [
        "",
        f"Samples ({result['samples']} per row, guided, {STEPS} log-SNR steps, same seeds):",
        "",
        "| bundle | run | accuracy | FID | IS | near-silent share |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["runs"]:
        m = row["metrics"]
        lines.append(f"| {row['bundle']} | {row['run']} | {m['accuracy'] * 100:.0f} % | {m['fid']:.2f} | {m['is']:.2f} | {m['floor_share']:.2f} |")
    lines += ["", f"CPU: {result['cpu']}"]
    return "\n".join(lines) + "\n"


def parse_bundle(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=DIR")
    return name, Path(path)


def main() -> None:
    ap = harness.parser(__doc__, "ode_diagnosis", threads=2)
    ap.add_argument("--bundle", type=parse_bundle, action="append", required=True, help="NAME=DIR; the first gets sections 3-4")
    ap.add_argument("--count", type=int, default=10, help="samples per digit of each run")
    args = ap.parse_args()
    evaluator = load_evaluator(files("c2d.models.checkpoints") / "evaluator.pt")
    reference = Reference.from_features(evaluator, load_features("train"))

    def quality(x, digits):
        m = evaluate_samples(evaluator, x, digits, reference)
        return {**m, "floor_share": float((x < -0.9).mean())}

    gens = {name: load(path, "ort", BackendOptions(threads=args.threads)) for name, path in args.bundle}
    runs, slopes = [], {}
    plans = {"ancestral": SAMPLERS["ancestral"].fn, "ddim": SAMPLERS["ddim"].fn, "dpm2m": SAMPLERS["dpm2m"].fn}
    first = args.bundle[0][0]
    for name, gen in gens.items():
        slopes[name] = radial_response(gen)
        todo = [(k, fn, None) for k, fn in plans.items()]
        if name == first:
            todo += [(f"ddim, each x_T rescaled to rms {r:.3f}", SAMPLERS["ddim"].fn, r) for r in (0.997, 1.0, 1.003)]
            for switch in (0.5, 0.2):
                todo.append((f"ancestral above t={switch}, ddim below", partial(ddim, eta=lambda s, w=switch: 1.0 if s > w else 0.0), None))
            todo.append(("ddim above t=0.5, ancestral below", partial(ddim, eta=lambda s: 0.0 if s > 0.5 else 1.0), None))
        for label, fn, x_rms in todo:
            start = time.time()
            x, digits = run_sampler(gen, fn, args.count, x_rms)
            runs.append({"bundle": name, "run": label, "metrics": quality(x, digits), "seconds": round(time.time() - start, 1)})
            print(f"{name} {label}: {runs[-1]['metrics']}", flush=True)
    result = {
        "command": "python -m c2d.benchmarks.ode_diagnosis " + " ".join(f"--bundle {n}={p}" for n, p in args.bundle),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "samples": args.count * 10,
        "bundles": {n: str(p) for n, p in args.bundle},
        "radial_slope": slopes,
        "runs": runs,
        "ddim_trajectories": trajectories(gens[first]),
    }
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
