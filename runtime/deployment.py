"""Profile-driven choice of backend and precision: measure every available backend x precision on this machine in
one interleaved run, gate each (parity with PyTorch on the bundle's reference cases, then the quality gate on a
sampled trajectory against ONNX Runtime fp32), and record the fastest passing choice.

The profile goes to a per-user cache, one file per generator file (SHA-256) and machine (fingerprint of CPU model,
core count and engine versions): ~/.cache/c2d/deployments/<sha>-<machine>.json ($C2D_CACHE moves it). A bundle may
carry its own deployment.json instead (`c2d profile --backend all --in-bundle`), which is read first. `c2d generate`
uses the choice when no --backend is given, only if it was measured for this generator file on this machine, its
backend is installed here and its precision is one that backend runs; otherwise it says why and runs ONNX Runtime fp32.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from c2d.runtime.backends import BackendOptions, BackendUnavailable
from c2d.runtime.bundle import read_manifest
from c2d.runtime.files import atomic_write_text, cache_root
from c2d.runtime.gate import Budget, compare, reference_run
from c2d.runtime.limits import max_threads
from c2d.runtime.parity import BUDGETS, budget_for, check_parity, check_vocoder_parity, load_reference

DEPLOYMENT_FILE = "deployment.json"
DEPLOYMENT_FORMAT = 1
PRECISIONS = {"ort": ("fp32",), "openvino": ("f32", "bf16")}  # what each CPU backend's choice may say
BACKEND_PACKAGES = {"ort": "onnxruntime", "openvino": "openvino"}


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str  # "fp32" on ONNX Runtime; "f32" / "bf16" on OpenVINO (int8 comes from the bundle itself)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    def options(self, threads: int | None) -> BackendOptions:
        return BackendOptions(threads=threads, precision=None if self.backend == "ort" else self.precision)


def available_candidates() -> list[Candidate]:
    """CPU backends x precisions whose packages are installed here."""
    found = [Candidate("ort", "fp32")]
    if importlib.util.find_spec("openvino") is not None:
        found += [Candidate("openvino", "f32"), Candidate("openvino", "bf16")]
    return found


def machine() -> dict:
    """What makes a measurement non-portable: CPU model, core count, engine versions."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(package) is not None:
            versions[package] = __import__(package).__version__
    return {"cpu": model, "cpu_count": os.cpu_count(), **versions}


def machine_fingerprint() -> str:
    return hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    return cache_root() / "deployments"


def cached_profile_path(generator_sha256: str) -> Path:
    """Where this machine's profile of one generator file lives in the per-user cache."""
    return cache_dir() / f"{generator_sha256[:16]}-{machine_fingerprint()}.json"


def step_feeds(bundle: Path) -> list[dict[str, np.ndarray]]:
    """Batch-1 inputs at the reference cases' noise levels (t_min .. 1)."""
    return [{k: v[:1] for k, v in feeds.items()} for feeds, _ in load_reference(bundle)]


def interleaved_rounds(backends: dict[str, object], feeds, rounds: int, calls: int, warmup: int = 1) -> dict[str, list[float]]:
    """Per-round median ms per call of every backend; each round visits every backend once (same machine state)."""
    for b in backends.values():
        for k in range(warmup):
            b.run(feeds[k % len(feeds)], ["eps"])
    times = {name: [] for name in backends}
    for _ in range(rounds):
        for name, b in backends.items():
            per_call = []
            for k in range(calls):
                start = time.perf_counter()
                b.run(feeds[k % len(feeds)], ["eps"])
                per_call.append(time.perf_counter() - start)
            times[name].append(statistics.median(per_call) * 1e3)
    return times


def interleaved_latency(backends: dict[str, object], feeds, rounds: int, calls: int) -> dict[str, float]:
    """Median over rounds of interleaved_rounds: one ms figure per backend."""
    return {name: statistics.median(v) for name, v in interleaved_rounds(backends, feeds, rounds, calls).items()}


def choose(bundle: str | Path, threads: int | None = None, rounds: int = 5, calls: int = 20, gate_budget: Budget = Budget(count=1),
           candidates: list[Candidate] | None = None, sampler: str | None = None, log: Callable[[str], None] = lambda _: None,
           out: str | Path | None = None) -> dict:
    """Measure and gate every candidate; write the profile (atomically) to `out`, default the per-user cache
    (cached_profile_path); return its contents with "path" added. The quality gate runs `sampler` (default: the
    bundle's) for gate_budget.steps (default: the bundle's)."""
    from c2d.runtime.generate import Generator

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    reference = Generator(bundle, "ort", BackendOptions(threads=threads))
    meta = reference.meta
    run = reference_run(reference, gate_budget, sampler=sampler)  # sampled once; every candidate is compared with it
    results, opened = {}, {}
    for cand in candidates or available_candidates():
        try:
            gen = Generator(bundle, cand.backend, cand.options(threads))
        except (BackendUnavailable, ImportError) as exc:
            results[cand.label] = {"backend": cand.backend, "precision": cand.precision, "available": False, "reason": str(exc)}
            continue
        parity = check_parity(gen.model, bundle, budget_for(cand.precision, meta.precision, meta.quantization))
        vocoder_budget = BUDGETS[cand.precision]
        vocoder_error = check_vocoder_parity(gen.vocoder.backend, bundle, vocoder_budget) if hasattr(gen.vocoder, "backend") else None
        vocoder_ok = vocoder_error is None or vocoder_error <= vocoder_budget
        gate = compare(run, gen, gate_budget)
        passed = parity.passed and vocoder_ok and not gate.failures
        results[cand.label] = {"backend": cand.backend, "precision": cand.precision, "available": True, "parity": parity.errors,
                               "parity_budget": parity.budget, "vocoder_parity": vocoder_error, "vocoder_parity_budget": vocoder_budget,
                               "gate": gate.summary(), "gate_failures": gate.failures, "passed": passed}
        vocoder_note = "" if vocoder_error is None else f", vocoder parity {'pass' if vocoder_ok else 'FAIL'} ({vocoder_error:.2e})"
        log(f"{cand.label}: parity {'pass' if parity.passed else 'FAIL'} (worst {max(parity.errors.values()):.2e}){vocoder_note}, "
            f"gate {'pass' if not gate.failures else 'FAIL: ' + '; '.join(gate.failures)}")
        opened[cand.label] = gen.model
    log(f"latency: {rounds} interleaved rounds x {calls} calls, batch 1")
    for label, ms in interleaved_latency(opened, step_feeds(bundle), rounds, calls).items():
        results[label]["step_ms"] = ms
    chosen = fastest_passing(results)
    profile = {"format": DEPLOYMENT_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
               "threads": threads, "gate_sampler": {"sampler": run.sampler, "steps": run.steps, "samples": len(run.generation.digits)},
               "generator_sha256": manifest["generator"].get("sha256"),
               "choice": None if chosen is None else {k: results[chosen][k] for k in ("backend", "precision", "step_ms")},
               "candidates": results}
    path = Path(out) if out is not None else cached_profile_path(manifest["generator"]["sha256"])
    atomic_write_text(path, json.dumps(profile, indent=2) + "\n")
    return {**profile, "path": str(path)}


def fastest_passing(results: dict[str, dict]) -> str | None:
    """The label of the fastest candidate that passed both gates; None if none did."""
    passing = [label for label, r in results.items() if r.get("passed")]
    return min(passing, key=lambda label: results[label]["step_ms"]) if passing else None


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    threads: int | None  # the thread count it was measured with (None: the engine's default)
    step_ms: float


def read_choice(bundle: str | Path) -> tuple[Choice | None, str]:
    """(the recorded choice, why) from the bundle's own deployment.json, else the per-user cache, if it is for this
    generator file and this machine and names an installed backend and a precision it runs; else (None, why not)."""
    bundle = Path(bundle)
    sha = read_manifest(bundle)["generator"]["sha256"]
    local, cached = bundle / DEPLOYMENT_FILE, cached_profile_path(sha)
    path = local if local.exists() else cached
    if not path.exists():
        return None, f"no deployment profile for this machine (run `c2d profile {bundle} --backend all` to choose the fastest backend here)"
    try:
        profile = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path} is unreadable ({exc}); ignored"
    problem = profile_problem(profile, sha)
    if problem:
        return None, f"{path} {problem}; ignored"
    c = profile["choice"]
    choice = Choice(Candidate(c["backend"], c["precision"]), profile.get("threads"), float(c["step_ms"]))
    return choice, f"{path.name}: fastest passing choice here, {choice.step_ms:.2f} ms/step"


def profile_problem(profile, generator_sha256: str) -> str | None:
    """Why a deployment profile cannot be used here, or None."""
    if not isinstance(profile, dict) or profile.get("format") != DEPLOYMENT_FORMAT:
        return f"is not a deployment profile of format {DEPLOYMENT_FORMAT}"
    c = profile.get("choice")
    if not isinstance(c, dict) or not c:
        return "holds no choice (no candidate passed its gates)"
    backend, precision, ms = c.get("backend"), c.get("precision"), c.get("step_ms")
    if backend not in PRECISIONS:
        return f"names backend {backend!r}, which c2d does not choose among ({', '.join(PRECISIONS)})"
    if precision not in PRECISIONS[backend]:
        return f"names precision {precision!r} for {backend}, which runs {', '.join(PRECISIONS[backend])}"
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not ms > 0:
        return f"records step_ms {ms!r}, not a positive number"
    threads = profile.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= max_threads()):
        return f"records threads {threads!r}, not 1 to the {max_threads()} cores here"
    if profile.get("generator_sha256") != generator_sha256:
        return "was measured for another generator file"
    if profile.get("machine") != machine():
        return "was measured on another machine or engine version"
    if importlib.util.find_spec(BACKEND_PACKAGES[backend]) is None:
        return f"chose {backend}, which is not installed here (pip install {BACKEND_PACKAGES[backend]})"
    return None


def deployment_markdown(profile: dict) -> str:
    lines = ["| backend | precision | ms/step | parity (worst rel. error / budget) | vocoder parity | gate | chosen |",
             "|---|---|---|---|---|---|---|"]
    chosen = profile["choice"] and (profile["choice"]["backend"], profile["choice"]["precision"])
    for r in profile["candidates"].values():
        if not r["available"]:
            lines.append(f"| {r['backend']} | {r['precision']} | - | unavailable: {r['reason']} | - | - | |")
            continue
        gate = "pass" if not r["gate_failures"] else "fail: " + "; ".join(r["gate_failures"])
        vocoder = "-" if r.get("vocoder_parity") is None else f"{r['vocoder_parity']:.1e} / {r['vocoder_parity_budget']:.0e}"
        lines.append(f"| {r['backend']} | {r['precision']} | {r['step_ms']:.2f} | {max(r['parity'].values()):.1e} / {r['parity_budget']:.0e} | {vocoder} | {gate} | "
                     f"{'**yes**' if chosen == (r['backend'], r['precision']) else ''} |")
    return "\n".join(lines) + "\n"
