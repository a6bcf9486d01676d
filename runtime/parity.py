"""Parity gate for backends and precisions: a backend is used only if it reproduces PyTorch on the bundle's
reference cases (reference.npz: inputs and PyTorch outputs, written at export), so no torch is needed on the device.

Error per output: max |backend - PyTorch| over all cases / max |PyTorch| over all cases (the exporter's measure, with
the scale taken over the whole set, so that a case where an output is near zero, such as the logits of pure noise at
t = 1, does not turn a small absolute error into a large relative one).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2d.runtime.bundle import BundleError, read_manifest
from c2d.runtime.contract import GENERATOR_INPUTS as INPUTS
from c2d.runtime.contract import GENERATOR_OUTPUTS as OUTPUTS
from c2d.runtime.contract import REFERENCE_FILE, VOCODER_INPUT, VOCODER_OUTPUT
from c2d.runtime.gate import Budget

# Budgets by arithmetic: f32 as the exporter's; bf16 keeps 8 mantissa bits (relative step 4e-3), and errors add up
# over about 30 layers and two backward passes; an int8 bundle may lose what its quantization gate allowed.
BUDGETS = {"fp32": 1e-4, "f32": 1e-4, "bf16": 5e-2}
# The vocoder's (worst waveform error relative to the peak). Where a backend's vocoder misses its budget at a reduced
# precision, the deployment profile runs the vocoder at the backend's full precision instead (deployment.FULL_PRECISION).
VOCODER_BUDGETS = dict(BUDGETS)


def reference_arrays(cases: list[tuple[dict, dict]]) -> dict[str, np.ndarray]:
    """[(inputs, outputs)] -> flat arrays "c<k>.<name>" for np.savez."""
    return {f"c{k}.{name}": value for k, (feeds, outs) in enumerate(cases) for name, value in {**feeds, **outs}.items()}


def read_reference_arrays(path: Path, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """A reference .npz, every array finite (NaN would compare as no error and pass any gate): BundleError otherwise."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path} is not a readable .npz: {exc}") from exc
    missing = [n for n in names or () if n not in arrays]
    if missing:
        raise BundleError(f"{path} lacks the arrays {', '.join(missing[:4])}; re-export the bundle")
    for name, value in arrays.items():
        if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
            raise BundleError(f"{path}: array {name} holds non-numeric or non-finite values; the reference is damaged")
    return arrays


def load_reference(bundle: str | Path) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    bundle = Path(bundle)
    name = read_manifest(bundle).generator.reference
    if not name or not (bundle / name).is_file():
        raise BundleError(f"{bundle} has no {REFERENCE_FILE} (re-export it with this c2d version to gate backends)")
    arrays = read_reference_arrays(bundle / name)
    count = len(arrays) // (len(INPUTS) + len(OUTPUTS))
    names = tuple(f"c{k}.{n}" for k in range(count) for n in INPUTS + OUTPUTS)
    if not count or len(arrays) != len(names) or set(arrays) != set(names):
        raise BundleError(f"{bundle / name} does not hold whole reference cases (inputs {INPUTS}, outputs {OUTPUTS}); re-export the bundle")
    cases = [({n: arrays[f"c{k}.{n}"] for n in INPUTS}, {n: arrays[f"c{k}.{n}"] for n in OUTPUTS}) for k in range(count)]
    for k, (feeds, outs) in enumerate(cases):
        x = feeds["x"]
        b = x.shape[0] if x.ndim == 4 else -1
        expected = {"t": (b,), "gamma": (b,), "eps": x.shape, "guidance": x.shape, "logits": (b, feeds["y"].shape[-1])}
        shapes = {**{n: v.shape for n, v in feeds.items()}, **{n: v.shape for n, v in outs.items()}}
        wrong = [n for n, shape in expected.items() if shapes[n] != shape] + ([] if x.ndim == 4 and feeds["y"].shape[0] == b else ["x/y"])
        if wrong:
            raise BundleError(f"{bundle / name}: reference case {k} has inconsistent shapes ({', '.join(wrong)}); the reference is damaged")
    return cases


@dataclass(frozen=True)
class ParityResult:
    errors: dict[str, float]  # worst relative error per output
    budget: float

    @property
    def passed(self) -> bool:
        return all(e <= self.budget for e in self.errors.values())


def budget_for(precision: str, bundle_precision: str, quantization: dict) -> float:
    """The arithmetic's budget; a quantized bundle adds twice the per-step error its quantization gate allowed, at
    most twice the default gate's: a bundle quantized with a looser (or lifted) gate gets no looser parity check."""
    budget = BUDGETS[precision]
    if bundle_precision != "fp32":
        default = Budget().step_error
        recorded = float(quantization.get("budget", {}).get("step_error", default))
        budget += 2 * min(recorded, default) if np.isfinite(recorded) else 2 * default
    return budget


def check_vocoder_parity(backend, bundle: str | Path, budget: float) -> float | None:
    """Worst relative error of an open vocoder backend on the bundle's vocoder reference (export's measure), or None
    for a bundle without one (Griffin-Lim, or exported before vocoder references). A non-finite output is inf."""
    bundle = Path(bundle)
    name = read_manifest(bundle).vocoder.reference
    if not name:
        return None
    if not (bundle / name).is_file():
        raise BundleError(f"{bundle} is incomplete: vocoder reference {name} is missing")
    arrays = read_reference_arrays(bundle / name, ("mel", "wave"))
    mel, ref = arrays[VOCODER_INPUT], arrays[VOCODER_OUTPUT]
    out = backend.run({VOCODER_INPUT: mel}, [VOCODER_OUTPUT])[0]
    if out.shape != ref.shape or not np.isfinite(out).all():
        return float("inf")
    return float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def check_parity(backend, bundle: str | Path, budget: float) -> ParityResult:
    """Run the reference cases on an open backend."""
    diff, scale = dict.fromkeys(OUTPUTS, 0.0), dict.fromkeys(OUTPUTS, 1e-12)
    for feeds, ref in load_reference(bundle):
        outs = backend.run(feeds, list(OUTPUTS))
        for name, out in zip(OUTPUTS, outs):
            finite = out.shape == ref[name].shape and np.isfinite(out).all()
            d = float(np.abs(out - ref[name]).max()) if finite else float("inf")
            diff[name], scale[name] = max(diff[name], d), max(scale[name], float(np.abs(ref[name]).max()))
    return ParityResult({name: diff[name] / scale[name] for name in OUTPUTS}, budget)


def verify_bundle(bundle: str | Path, threads: int | None = None) -> dict:
    """What `c2d inspect --verify` checks: every file against its manifest SHA-256 (on load), then ONNX Runtime fp32
    against the PyTorch outputs stored at export (generator and vocoder), within the exporter's budget."""
    from c2d.runtime.backends import BackendOptions
    from c2d.runtime.generate import Generator

    gen = Generator(bundle, "ort", BackendOptions(threads=threads))
    budget = BUDGETS["fp32"]
    if gen.meta.precision != "fp32":
        budget = budget_for("fp32", gen.meta.precision, gen.meta.quantization)
    parity = check_parity(gen.model, bundle, budget)
    failures = [f"generator {name} error {err:.2e} > {budget:.0e}" for name, err in parity.errors.items() if not err <= budget]
    vocoder = check_vocoder_parity(gen.vocoder.backend, bundle, VOCODER_BUDGETS["fp32"]) if hasattr(gen.vocoder, "backend") else None
    if vocoder is not None and not vocoder <= VOCODER_BUDGETS["fp32"]:
        failures.append(f"vocoder error {vocoder:.2e} > {VOCODER_BUDGETS['fp32']:.0e}")
    return {
        "sha256": "match",
        "generator_parity": parity.errors,
        "budget": budget,
        "vocoder_parity": vocoder,
        "failures": failures,
        "passed": not failures,
    }


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref| (the parity measure); inf where out is not finite or has another shape."""
    if out.shape != ref.shape or not np.isfinite(out).all():
        return float("inf")
    return float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def reference_outputs(backend, bundle: str | Path) -> dict[str, np.ndarray]:
    """The backend's generator outputs on the bundle's reference cases, named c<k>.<output> as in reference.npz."""
    out = {}
    for k, (feeds, _) in enumerate(load_reference(bundle)):
        for name, value in zip(OUTPUTS, backend.run(feeds, list(OUTPUTS))):
            out[f"c{k}.{name}"] = value
    return out


def compare_outputs(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Worst relative error per output over all cases, scale over all cases (as check_parity measures)."""
    errors = {}
    for name in OUTPUTS:
        keys = sorted(k for k in ref if k.endswith(f".{name}"))
        if any(k not in got or got[k].shape != ref[k].shape for k in keys):
            errors[name] = float("inf")
            continue
        errors[name] = relative_error(np.concatenate([got[k].ravel() for k in keys]), np.concatenate([ref[k].ravel() for k in keys]))
    return errors


def main(argv: list[str] | None = None) -> None:
    """python -m c2d.runtime.parity OUT_DIR BUNDLE [BUNDLE ...] [--threads N]: every bundle's generator outputs on its
    reference cases with ONNX Runtime on this machine, saved as OUT_DIR/<bundle folder name>.npz, and a JSON summary
    (parity against the stored reference, budget, seconds) on stdout: for comparing machines (benchmarks/arm64_parity.py)."""
    import argparse
    import json
    import time

    from c2d.runtime.backends import BackendOptions
    from c2d.runtime.generate import Generator

    ap = argparse.ArgumentParser(prog="python -m c2d.runtime.parity", description=main.__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("bundles", type=Path, nargs="+")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for bundle in args.bundles:
        start = time.perf_counter()
        gen = Generator(bundle, "ort", BackendOptions(threads=args.threads))
        opened = time.perf_counter()
        outputs = reference_outputs(gen.model, bundle)
        done = time.perf_counter()
        np.savez(args.out / f"{bundle.name}.npz", **outputs)  # type: ignore[arg-type]
        summary[bundle.name] = {
            "precision": gen.meta.precision,
            "budget": budget_for("fp32", gen.meta.precision, gen.meta.quantization),
            "parity_vs_stored_reference": check_parity(gen.model, bundle, 0.0).errors,
            "open_s": opened - start,
            "outputs_s": done - opened,
            "cases": len(load_reference(bundle)),
        }
        print(f"{bundle.name}: {summary[bundle.name]['cases']} cases in {done - opened:.1f} s", flush=True)
    print("C2D-PARITY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
