"""Profile-driven choice of backend and precision: measure every available backend x precision on this machine in
one interleaved run, gate each (parity with PyTorch on the bundle's reference cases, then the quality gate on a
sampled trajectory against ONNX Runtime fp32), and record the fastest passing choice.

The profile goes to a per-user cache, one file per generator file (SHA-256) and machine (fingerprint of CPU model,
architecture, instruction-set features, core count and engine versions, runtime/machine.py):
~/.cache/c2d/deployments/<sha>-<machine>.json ($C2D_CACHE moves it). A bundle may
carry its own deployment.json instead (`c2d profile --backend all --in-bundle`), which is read first. `c2d generate`
uses the choice when no --backend is given, only if it was measured for this generator file on this machine, its
backend is installed here and its precision is one that backend runs; otherwise it says why and runs ONNX Runtime fp32.

Quantized bundles made from this generator (`c2d quantize BUNDLE ... -o OUT`, then `c2d profile BUNDLE --backend all
--also OUT`) are candidates too, gated against the same fp32 reference run: when one of them is the fastest passing
choice, the profile names its folder and generator SHA-256, and `c2d generate` on BUNDLE runs that bundle instead,
as long as its generator file is still the one measured.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from c2d.runtime.backends import Backend, BackendOptions, BackendUnavailable
from c2d.runtime.bundle import BundleError, generator_sha256, read_manifest
from c2d.runtime.contract import DEPLOYMENT_FILE, DEPLOYMENT_FORMAT
from c2d.runtime.files import InputError, atomic_write_text, cache_root, read_json
from c2d.runtime.gate import Budget, compare, reference_run
from c2d.runtime.limits import max_threads
from c2d.runtime.machine import fingerprint, fingerprint_fields, machine_record, provenance
from c2d.runtime.parity import VOCODER_BUDGETS, budget_for, check_parity, check_vocoder_parity, load_reference
from c2d.runtime.timing import interleaved_latency

PRECISIONS = {"ort": ("fp32",), "openvino": ("f32", "bf16")}  # what each CPU backend's choice may say
FULL_PRECISION = {"ort": "fp32", "openvino": "f32"}  # where a reduced-precision candidate's vocoder falls back to
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
    """The machine record a profile is stamped with (runtime/machine.py); its fingerprint fields key the cache."""
    return machine_record()


def machine_fingerprint() -> str:
    return fingerprint(machine())


def cache_dir() -> Path:
    return cache_root() / "deployments"


def cached_profile_path(generator_sha256: str) -> Path:
    """Where this machine's profile of one generator file lives in the per-user cache."""
    return cache_dir() / f"{generator_sha256[:16]}-{machine_fingerprint()}.json"


def step_feeds(bundle: Path) -> list[dict[str, np.ndarray]]:
    """Batch-1 inputs at the reference cases' noise levels (t_min .. 1)."""
    return [{k: v[:1] for k, v in feeds.items()} for feeds, _ in load_reference(bundle)]


def check_quantized_from(quantized: Path, bundle: Path, bundle_sha256: str | None = None) -> None:
    """BundleError unless `quantized` is a `c2d quantize` output of `bundle`'s generator file (whose SHA-256 may be
    passed in, when it is known already)."""
    source = (read_manifest(quantized).quantization or {}).get("source_sha256")
    if source != (bundle_sha256 or generator_sha256(bundle)):
        raise BundleError(
            f"{quantized} is not a quantized bundle made from {bundle}'s generator (`c2d quantize {bundle} ... -o OUT` "
            "makes one), so it cannot stand in for it"
        )


GATE_SAMPLES_PER_DIGIT = 3  # 30 samples: see gate_budget below
GATE_BUDGET = Budget(count=GATE_SAMPLES_PER_DIGIT, by_interval=True)


def thread_counts(threads: int | None) -> list[int]:
    """The thread counts to explore: the one asked for, else 1, 2, 4, ... below the core count, and the core count."""
    if threads is not None:
        return [threads]
    cores = max_threads()
    counts, n = {cores}, 1
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


def choose(
    bundle: str | Path,
    threads: int | None = None,
    rounds: int = 5,
    calls: int = 20,
    gate_budget: Budget = GATE_BUDGET,
    candidates: list[Candidate] | None = None,
    sampler: str | None = None,
    log: Callable[[str], None] = lambda _: None,
    out: str | Path | None = None,
    also: Sequence[str | Path] = (),
) -> dict:
    """Measure and gate every candidate, on `bundle` and on each quantized bundle in `also` (made from it), at every
    thread count of thread_counts(threads); write the profile (atomically) to `out`, default the per-user cache
    (cached_profile_path); return its contents with "path" added.

    The quality gate compares every candidate with one ORT fp32 run of `bundle`, with `sampler` (default: the
    bundle's) for gate_budget.steps (default: the bundle's), on gate_budget.count samples per digit. The deployment
    gate decides by interval (GATE_BUDGET.by_interval): a candidate passes only if the upper end of the 95 %
    bootstrap interval of its worst-step error is within budget, so a pass is not a lucky draw of a few samples.
    The gate's numerics do not depend on the thread count, so it runs once per candidate; latency is measured for
    every (candidate, threads) pair in one interleaved run."""
    from c2d.runtime.generate import Generator

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    sources = [(bundle, "")] + [(Path(q), f" [{Path(q).name}]") for q in also]  # (bundle, label suffix)
    bundle_sha256 = generator_sha256(bundle)
    for q, _ in sources[1:]:
        check_quantized_from(q, bundle, bundle_sha256)
    counts = thread_counts(threads)
    path = Path(out) if out is not None else cached_profile_path(str(manifest.generator.sha256))
    earlier = earlier_choice(path)
    reference = Generator(bundle, "ort", BackendOptions(threads=counts[-1]))
    run = reference_run(reference, gate_budget, sampler=sampler)  # sampled once; every candidate is compared with it
    log(f"quality gate: {len(run.generation.digits)} samples, {run.sampler} {len(run.calls)} steps, against ONNX Runtime fp32")
    results: dict[str, dict[str, Any]] = {}
    opened: dict[str, Backend] = {}
    for source, suffix in sources:
        where = {} if source == bundle else {"bundle": str(source.resolve()), "generator_sha256": generator_sha256(source)}
        for cand in candidates or available_candidates():
            gate: dict[str, Any] | None = None
            for t in counts:
                label = f"{cand.label} x{t}{suffix}"
                try:
                    gen = Generator(source, cand.backend, cand.options(t))
                except (BackendUnavailable, ImportError) as exc:
                    results[label] = {
                        "backend": cand.backend,
                        "precision": cand.precision,
                        "threads": t,
                        **where,
                        "available": False,
                        "reason": str(exc),
                    }
                    continue
                if gate is None:
                    gate = gated(gen, source, cand, run, gate_budget)
                    log(f"{cand.label}{suffix}: {gate_line(gate)}")
                results[label] = {"backend": cand.backend, "precision": cand.precision, "threads": t, **where, **gate}
                opened[label] = gen.model
    log(f"latency: {rounds} interleaved rounds x {calls} calls, batch 1, threads {', '.join(map(str, counts))}")
    for label, ms in interleaved_latency(opened, step_feeds(bundle), rounds, calls).items():
        results[label]["step_ms"] = ms
    log("one run as `c2d generate` makes it: open the bundle, sample one digit (default sampler and steps), vocode")
    for label, r in results.items():
        if r.get("passed"):
            r["run_ms"] = one_run_ms(Path(r.get("bundle", bundle)), Candidate(r["backend"], r["precision"]), r["threads"], r.get("vocoder_precision"))
            log(f"{label}: {r['run_ms']:.0f} ms per run")
    chosen = fastest_passing(results)
    profile = {
        "format": DEPLOYMENT_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "fingerprint": machine_fingerprint(),
        "provenance": provenance(),
        "threads_explored": counts,
        "gate_sampler": {"sampler": run.sampler, "steps": run.steps, "samples": len(run.generation.digits), "decided_by": "95 % interval"},
        "generator_sha256": manifest.generator.sha256,
        "vocoder_sha256": manifest.vocoder.sha256,
        "choice": None if chosen is None else {k: results[chosen][k] for k in CHOICE_KEYS if k in results[chosen]},
        "candidates": results,
    }
    if earlier:
        log(f"replaces the earlier profile at {path} ({earlier})")
    atomic_write_text(path, json.dumps(profile, indent=2) + "\n")
    return {**profile, "path": str(path)}


def gate_line(r: dict) -> str:
    """One log line for a candidate's gates: parity, vocoder parity, quality gate with its interval."""
    vocoder_note = "" if r["vocoder_parity"] is None else f", vocoder parity {r['vocoder_parity']:.2e}"
    if r.get("vocoder_parity_fallback") is not None:
        vocoder_note += f" (over its budget: the vocoder runs at {r['vocoder_precision']}, {r['vocoder_parity_fallback']:.2e})"
    g = r["gate"]
    low, high = g.get("max_step_error_95", (float("nan"),) * 2)
    verdict = "pass" if not r["gate_failures"] else "FAIL: " + "; ".join(r["gate_failures"])
    return (
        f"parity worst {max(r['parity'].values()):.2e}{vocoder_note}, step error {g['max_step_error']:.4f} "
        f"(95 % interval {low:.4f} to {high:.4f}), gate {verdict}; {'passed' if r['passed'] else 'FAILED'}"
    )


def earlier_choice(path: Path) -> str | None:
    """What an existing profile at `path` chose and when, to say that a new one replaces it (None if there is none)."""
    if not path.exists():
        return None
    try:
        old = read_json(path, "deployment profile")
    except InputError:
        return "unreadable"
    c = old.get("choice") if isinstance(old, dict) else None
    what = f"it chose {c.get('backend')} {c.get('precision')} x{c.get('threads', old.get('threads'))}" if isinstance(c, dict) else "no choice"
    return f"{what}, measured {old.get('created', 'at an unknown time') if isinstance(old, dict) else 'at an unknown time'}"


CHOICE_KEYS = ("backend", "precision", "threads", "vocoder_precision", "step_ms", "run_ms", "bundle", "generator_sha256")
ONE_RUN_REPEATS = 3  # fresh opens per candidate; the fastest counts (the first may still fill a compile cache)


def one_run_ms(source: Path, cand: Candidate, threads: int | None, vocoder_precision: str | None = None) -> float:
    """Milliseconds of one whole `c2d generate --digit D` run on this candidate: open the bundle (an engine that
    compiles per input shape pays that here, from its on-disk cache when warm), sample one digit with the bundle's
    default sampler and steps at batch 1, vocode. The fastest of ONE_RUN_REPEATS fresh opens."""
    from c2d.runtime.generate import Generator

    times = []
    for _ in range(ONE_RUN_REPEATS):
        start = time.perf_counter()
        Generator(source, cand.backend, cand.options(threads), vocoder_precision).sample([0])
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def gated(gen, source: Path, cand: Candidate, run, gate_budget: Budget) -> dict:
    """Parity of an open generator with its own bundle's reference cases (and its vocoder's), and the quality gate
    against the reference run."""
    meta = gen.meta
    parity = check_parity(gen.model, source, budget_for(cand.precision, meta.precision, meta.quantization))
    gate = compare(run, gen, gate_budget)
    vocoder = vocoder_parity(gen, source, cand)
    return {
        "available": True,
        "parity": parity.errors,
        "parity_budget": parity.budget,
        **vocoder,
        "gate": gate.summary(),
        "step_budget": gate_budget.step_error,
        "gate_failures": gate.failures,
        "passed": parity.passed and vocoder["vocoder_ok"] and not gate.failures,
    }


def vocoder_parity(gen, source: Path, cand: Candidate) -> dict:
    """The vocoder's parity at the candidate's precision; where it misses its budget there, at the backend's full
    precision (the vocoder is a few per cent of a run, so it need not share the generator's precision). Keys:
    vocoder_parity, vocoder_parity_budget, vocoder_precision, vocoder_ok, and vocoder_parity_fallback if it fell back."""
    if not hasattr(gen.vocoder, "backend"):  # Griffin-Lim: numpy, no backend to check
        return {"vocoder_parity": None, "vocoder_parity_budget": None, "vocoder_precision": cand.precision, "vocoder_ok": True}
    budget = VOCODER_BUDGETS[cand.precision]
    error = check_vocoder_parity(gen.vocoder.backend, source, budget)
    result = {"vocoder_parity": error, "vocoder_parity_budget": budget, "vocoder_precision": cand.precision}
    full = FULL_PRECISION.get(cand.backend, cand.precision)
    if error is None or error <= budget or full == cand.precision:
        return {**result, "vocoder_ok": error is None or error <= budget}
    from c2d.runtime.backends import open_backend
    from c2d.runtime.bundle import bundle_file

    path = bundle_file(gen.bundle, str(gen.manifest.vocoder.file))
    fallback = open_backend(cand.backend, path, Candidate(cand.backend, full).options(1))
    fallback_error = check_vocoder_parity(fallback, source, VOCODER_BUDGETS[full])
    return {
        **result,
        "vocoder_precision": full,
        "vocoder_parity_fallback": fallback_error,
        "vocoder_ok": fallback_error is None or fallback_error <= VOCODER_BUDGETS[full],
    }


def fastest_passing(results: dict[str, dict]) -> str | None:
    """The label of the fastest candidate that passed both gates (by the time of one whole run where every passing
    candidate has one, else by ms per step); None if none did."""
    passing = [label for label, r in results.items() if r.get("passed")]
    key = "run_ms" if all("run_ms" in results[label] for label in passing) else "step_ms"
    return min(passing, key=lambda label: results[label][key]) if passing else None


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    threads: int | None  # the thread count it was measured with (None: the engine's default)
    step_ms: float
    bundle: Path | None = None  # a quantized bundle that runs in place of the profiled one (None: the profiled one)
    vocoder_precision: str | None = None  # None: the candidate's precision


def read_choice(bundle: str | Path) -> tuple[Choice | None, str]:
    """(the recorded choice, why) from the bundle's own deployment.json, else the per-user cache, if it is for this
    generator file and this machine and names an installed backend and a precision it runs; else (None, why not)."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    sha = str(manifest.generator.sha256)
    local, cached = bundle / DEPLOYMENT_FILE, cached_profile_path(sha)
    path = local if local.exists() else cached
    if not path.exists():
        return None, f"no deployment profile for this machine (run `c2d profile {bundle} --backend all` to choose the fastest backend here)"
    try:
        profile = read_json(path, "deployment profile")
    except InputError as exc:
        return None, f"{exc}; ignored"
    problem = profile_problem(profile, sha, manifest.vocoder.sha256)
    if problem:
        return None, f"{path} {problem}; ignored"
    c = profile["choice"]
    stand_in = Path(c["bundle"]) if "bundle" in c else None
    if stand_in is not None:
        try:
            found = generator_sha256(stand_in)
        except (BundleError, OSError) as exc:
            return None, f"{path} chose the quantized bundle {stand_in}, which cannot be read now ({exc}); ignored"
        if found != c.get("generator_sha256"):
            return None, f"{path} chose the quantized bundle {stand_in}, whose generator file has changed since; ignored"
    choice = Choice(Candidate(c["backend"], c["precision"]), c.get("threads"), float(c["step_ms"]), stand_in, c.get("vocoder_precision"))
    where = "" if stand_in is None else f", the quantized bundle {stand_in}"
    run = f"{c['run_ms']:.0f} ms per run, " if isinstance(c.get("run_ms"), (int, float)) else ""
    return choice, f"{path.name}: fastest passing choice here{where}, {run}{choice.step_ms:.2f} ms/step"


def profile_problem(profile, generator_sha256: str, vocoder_sha256: str | None = None) -> str | None:
    """Why a deployment profile cannot be used here, or None."""
    if isinstance(profile, dict) and isinstance(profile.get("format"), int) and profile["format"] < DEPLOYMENT_FORMAT:
        return f"was written by an older c2d (format {profile['format']}: no instruction-set features, no thread choice); profile again"
    if not isinstance(profile, dict) or profile.get("format") != DEPLOYMENT_FORMAT:
        return f"is not a deployment profile of format {DEPLOYMENT_FORMAT}"
    c = profile.get("choice")
    if not isinstance(c, dict) or not c:
        return "holds no choice (no candidate passed its gates)"
    backend, precision, ms = c.get("backend"), c.get("precision"), c.get("step_ms")
    if not all(isinstance(v, str) for v in (backend, precision, c.get("vocoder_precision", ""))):
        return "names its backend and precisions with something other than strings"
    if backend not in PRECISIONS:
        return f"names backend {backend!r}, which c2d does not choose among ({', '.join(PRECISIONS)})"
    if precision not in PRECISIONS[backend]:
        return f"names precision {precision!r} for {backend}, which runs {', '.join(PRECISIONS[backend])}"
    if c.get("vocoder_precision", precision) not in PRECISIONS[backend]:
        return f"names vocoder precision {c['vocoder_precision']!r} for {backend}, which runs {', '.join(PRECISIONS[backend])}"
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not ms > 0:
        return f"records step_ms {ms!r}, not a positive number"
    if "bundle" in c and not (isinstance(c["bundle"], str) and isinstance(c.get("generator_sha256"), str)):
        return "names a quantized bundle without its folder and generator SHA-256 as strings"
    threads = c.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= max_threads()):
        return f"records threads {threads!r}, not 1 to the {max_threads()} cores here"
    if profile.get("generator_sha256") != generator_sha256:
        return "was measured for another generator file"
    if "vocoder_sha256" not in profile:
        return "does not name the vocoder file it measured (an older c2d wrote it); profile again"
    if profile.get("vocoder_sha256") != vocoder_sha256:  # its vocoder parity (and vocoder_precision) were measured too
        return "was measured with another vocoder file (`c2d export --vocoder-only` replaced it?)"
    recorded = profile.get("machine")
    if not isinstance(recorded, dict) or fingerprint_fields(recorded) != fingerprint_fields(machine()):
        return "was measured on another machine (CPU, instruction-set features, cores) or engine version"
    if importlib.util.find_spec(BACKEND_PACKAGES[backend]) is None:
        return f"chose {backend}, which is not installed here (pip install {BACKEND_PACKAGES[backend]})"
    return None


def deployment_markdown(profile: dict) -> str:
    """One row per candidate and thread count; a generator column when quantized bundles were candidates too."""
    rows = profile["candidates"].values()
    several = any("bundle" in r for r in rows)
    extra_head, extra_rule = (" generator |", "---|") if several else ("", "")
    lines = [
        "| backend | precision | threads | ms/step | ms per run | parity (worst rel. error / budget) | vocoder parity "
        "| worst-step error [95 % interval] / budget | gate | chosen |" + extra_head,
        "|---|---|---|---|---|---|---|---|---|---|" + extra_rule,
    ]
    key = lambda r: (r["backend"], r["precision"], r.get("threads"), r.get("bundle"))
    chosen = profile["choice"] and key(profile["choice"])
    for r in rows:
        generator = f" {Path(r['bundle']).name} |" if "bundle" in r else (" this bundle |" if several else "")
        head = f"| {r['backend']} | {r['precision']} | {r.get('threads', '-')} "
        if not r["available"]:
            lines.append(head + f"| - | - | unavailable: {r['reason']} | - | - | - | |" + generator)
            continue
        gate = "pass" if not r["gate_failures"] else "fail: " + "; ".join(r["gate_failures"])
        vocoder = "-" if r.get("vocoder_parity") is None else f"{r['vocoder_parity']:.1e} / {r['vocoder_parity_budget']:.0e}"
        if r.get("vocoder_parity_fallback") is not None:
            vocoder += f"; at {r['vocoder_precision']}: {r['vocoder_parity_fallback']:.1e} (runs at {r['vocoder_precision']})"
        g = r["gate"]
        interval = f" [{g['max_step_error_95'][0]:.4f}, {g['max_step_error_95'][1]:.4f}]" if "max_step_error_95" in g else ""
        run = f"{r['run_ms']:.0f}" if "run_ms" in r else "-"
        lines.append(
            head + f"| {r['step_ms']:.2f} | {run} | {max(r['parity'].values()):.1e} / {r['parity_budget']:.0e} | {vocoder} "
            f"| {g['max_step_error']:.4f}{interval} / {r.get('step_budget', '-')} | {gate} | {'**yes**' if chosen == key(r) else ''} |" + generator
        )
    gs = profile.get("gate_sampler", {})
    lines.append("")
    lines.append(
        f"Quality gate: {gs.get('samples')} samples, {gs.get('sampler')} {gs.get('steps') or ''} steps against ONNX Runtime fp32; a candidate "
        "passes only if the upper end of the interval is within budget."
    )
    return "\n".join(lines) + "\n"
