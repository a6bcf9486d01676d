"""`c2d quantize`: an fp32 bundle -> a quantized bundle that passed a quality gate against it, or nothing.

This module is the bundle's side: the modes, the activation-range cache, the gate, staging and the manifest. The
graph passes are in onnx_passes.py, the ORT quantization drivers in quantizers.py, the mixed mode's search in
mixed_search.py.

Modes (ONNX Runtime's quantization tools do the graph rewriting):
  int8-static   QDQ, int8 per-channel weights, uint8 activations, ranges from a recording of real sampler runs
                (calibration/), MinMax, Entropy or Percentile
  int8-dynamic  int8 weights, activations quantized at run time
  fp16          float16 weights and arithmetic, float32 inputs and outputs
  mixed         int8-static, with the blocks a sensitivity sweep found most harmful kept in float

Traps handled here (DESIGN.md): a weight shared by a Conv and its transposed twin is duplicated before
per-channel QDQ; every node that does not depend on x (noise-level, time-embedding and guidance-scale
arithmetic) stays float: int8 modes quantize only Conv/ConvTranspose/MatMul/Gemm (elementwise QDQ pairs would only
add work), so the noise-level arithmetic, all elementwise, is never quantized, and of the MatMuls only those with a
weight (attention's products of two activations stay float: activation_products); fp16 keeps every node that does not
depend on x in float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from c2d.calibration.record import Recording, check_matches, load_recording
from c2d.export.exporter import read_metadata, write_metadata
from c2d.export.istft_basis import inline_istft_basis
from c2d.export.mixed_search import choose_float_blocks, cpu_session, sensitivity_sweep
from c2d.export.onnx_passes import QuantizationError, activation_products, compact, float_only_nodes, prepare, quantizable_blocks
from c2d.export.quantizers import CALIBRATION_METHODS, convert_fp16, quantize_int8_dynamic, quantize_int8_static
from c2d.runtime.bundle import file_sha256, read_manifest, write_manifest
from c2d.runtime.contract import GENERATOR_FILE, MANIFEST_FILE, VOCODER_FILE, Manifest
from c2d.runtime.files import atomic_path, replace_dir, staging_dir
from c2d.runtime.gate import Budget, quality_gate

MODES = ("int8-static", "int8-dynamic", "fp16", "mixed")
VOCODER_MODES = ("keep", "fp16", "int8-dynamic")


def evaluator_accuracy(log_mel: np.ndarray, digits: list[int], mel_cfg, evaluator) -> float:
    from c2d.models.evaluator import classify
    from c2d.runtime.audio import normalize

    probs, _ = classify(evaluator, normalize(log_mel, mel_cfg)[:, None])
    return float(np.mean(probs.argmax(1) == np.array(digits)))


# --- bundle -------------------------------------------------------------------------------------------------


def copy_into_staging(src: Path, dst: Path, out: Path) -> None:
    """Copy a source file into the output's staging folder; a failure (a full disk) names the output being written,
    not the source being read."""
    try:
        shutil.copy2(src, dst)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {out} ({exc.strerror or exc} while copying {src.name})", str(out)) from exc


def ranges_cache_path(calib: Path, method: str, generator: Path) -> Path:
    """Where the activation ranges of one recording, method and generator file are kept: the per-user cache, keyed
    by the content of the calibration folder and of the generator (never the calibration folder: reading never
    writes)."""
    from c2d.runtime.files import cache_root

    h = hashlib.sha256()
    for f in sorted(p for p in calib.iterdir() if p.is_file()):
        h.update(f.name.encode() + b"\0" + file_sha256(f).encode())
    return cache_root() / "ranges" / f"ranges-{method}-{file_sha256(generator)[:12]}-{h.hexdigest()[:16]}.json"


def reuse_ranges(kept: Path, work_copy: Path) -> None:
    """Start from cached ranges if the entry is a regular file of at most 16 MB holding a JSON object; anything else
    (damaged, truncated, a FIFO) is removed and rebuilt by this run."""
    try:
        if not kept.is_file():
            if kept.exists() or kept.is_symlink():
                kept.unlink()
            return
        if kept.stat().st_size <= 16 << 20 and isinstance(json.loads(kept.read_text()), dict):
            shutil.copyfile(kept, work_copy)
            return
        kept.unlink()
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            kept.unlink()


def keep_ranges(computed: Path, kept: Path) -> None:
    """Keep computed ranges in the cache (write-then-rename, so concurrent runs never see half a file); a cache that
    cannot be written (read-only home) only costs the next run the computation."""
    if kept.is_file() or not computed.is_file():
        return
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(kept) as tmp:
            shutil.copyfile(computed, tmp)
    except OSError:
        pass


def quantize_generator_file(
    src: Path, dst: Path, mode: str, recording: Recording | None, method: str, mixed_target: float, work: Path, log: Callable[[str], None]
) -> dict:
    """Write the quantized generator graph to dst; returns what was done (for the metadata)."""
    prepared = work / "prepared.onnx"
    model = prepare(src, prepared)
    # int8: quantized op types are never noise-level arithmetic (module docstring); products of two activations stay float
    exclude: list[str] = activation_products(model)
    info: dict = {"mode": mode}
    if mode in ("int8-static", "mixed"):
        if recording is None:
            raise QuantizationError(f"--mode {mode} needs calibration data: --calib CALIB (made by `c2d calibrate`)")
        kept_cache = ranges_cache_path(Path(recording.info["path"]), method, src)  # per-user, reused by later runs
        cache = work / kept_cache.name
        reuse_ranges(kept_cache, cache)
        info.update(calibration=method, calibration_calls=recording.calls)
        if mode == "mixed":
            log(f"sensitivity sweep over {len(quantizable_blocks(model, set(exclude)))} blocks")
            scores = sensitivity_sweep(model, prepared, src, recording, method, cache, exclude, work, log)
            kept, error = choose_float_blocks(model, prepared, src, recording, method, cache, exclude, scores, mixed_target, work, log)
            blocks = quantizable_blocks(model, set(exclude))
            exclude = exclude + [n for b in kept for n in blocks[b]]
            info.update(sensitivity={k: round(v, 5) for k, v in scores.items()}, float_blocks=kept, sweep_error=round(error, 5))
        quantize_int8_static(prepared, dst, recording, method, cache, exclude)
        keep_ranges(cache, kept_cache)
    elif mode == "int8-dynamic":
        quantize_int8_dynamic(prepared, dst, exclude)
    elif mode == "fp16":
        exclude = float_only_nodes(model)
        info["float32_nodes"] = len(exclude)
        convert_fp16(prepared, dst, exclude)
    else:
        raise QuantizationError(f"unknown mode {mode!r}; choose one of {MODES}")
    compact(dst)
    return info


def quantize_vocoder_file(src: Path, dst: Path, mode: str, mel_cfg, budget: Budget) -> dict:
    """The vocoder's own precision, checked on its own: log-Mel of its audio against the fp32 vocoder's."""
    from c2d.runtime.audio import log_mel

    prepared = dst.with_name(dst.name + ".prepared.onnx")
    prepare(src, prepared)
    # The pre-processing folds the Fourier vocoder's inverse-STFT basis into a 4.2 MB constant: compute it in the graph
    # again, in float32 (k * n reaches 5e5, past float16's range).
    keep_float = inline_istft_basis(prepared, mel_cfg.n_fft)
    if mode == "fp16":
        convert_fp16(prepared, dst, keep_float)
    elif mode == "int8-dynamic":
        quantize_int8_dynamic(prepared, dst, keep_float, op_types=("Conv", "MatMul"))
    prepared.unlink()
    compact(dst)
    rng = np.random.default_rng(0)
    mel = (rng.standard_normal((2, mel_cfg.n_mels, 48)) * 1.5 - 5.0).astype(np.float32)
    ref, out = (cpu_session(p).run(None, {"mel": mel})[0][:, 0] for p in (src, dst))
    distance = float(np.mean([np.abs(log_mel(r, mel_cfg) - log_mel(o, mel_cfg)).mean() for r, o in zip(ref, out)]))
    if not np.isfinite(out).all() or distance > budget.mel_distance:
        raise QuantizationError(f"vocoder {mode}: log-Mel distance {distance:.4f} of its audio > budget {budget.mel_distance}; nothing written")
    meta = read_metadata(src)
    write_metadata(dst, replace(meta, precision=mode))
    return {"mode": mode, "mel_distance": round(distance, 4)}


def quantize_bundle(
    bundle: str | Path,
    out: str | Path,
    mode: str,
    calib: str | Path | None = None,
    method: str = "minmax",
    budget: Budget = Budget(),
    vocoder_mode: str = "keep",
    evaluator_path: str | Path | None = None,
    mixed_target: float | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Quantize, gate against the fp32 bundle, and write OUT atomically; QuantizationError (nothing written) otherwise.
    mixed_target: the sweep's error target on calibration calls [default: half the gate's step-error budget, a margin
    for the held-out gate samples]."""
    from c2d.export.exporter import check_destination

    bundle, out = Path(bundle), Path(out)
    if mode not in MODES:
        raise QuantizationError(f"unknown mode {mode!r}; choose one of {MODES}")
    if method not in CALIBRATION_METHODS:
        raise QuantizationError(f"unknown calibration method {method!r}; choose one of {CALIBRATION_METHODS}")
    if vocoder_mode not in VOCODER_MODES:
        raise QuantizationError(f"unknown vocoder mode {vocoder_mode!r}; choose one of {VOCODER_MODES}")
    if out.resolve() == bundle.resolve():
        raise QuantizationError("the output bundle must differ from the fp32 bundle it is gated against")
    manifest = read_manifest(bundle)
    gen_file = bundle / str(manifest.generator.file)
    meta = read_metadata(gen_file)
    if meta.precision != "fp32":
        raise QuantizationError(f"{bundle} is already {meta.precision}; quantize from the fp32 bundle")
    recording = None
    if calib is not None:
        recording = load_recording(calib)
        check_matches(recording, bundle)
    if manifest.vocoder.file is None and vocoder_mode != "keep":
        raise QuantizationError(f"{bundle} uses the weight-free {manifest.vocoder.kind} vocoder; --vocoder-mode must be keep")
    check_destination(out)
    evaluator = None
    if evaluator_path is not None:
        from c2d.models.evaluator import load_evaluator

        evaluator = load_evaluator(evaluator_path)
    tmp = staging_dir(out)
    try:
        for name in (MANIFEST_FILE, *manifest.files()):  # the bundle's own files only (not a machine's deployment.json)
            copy_into_staging(bundle / name, tmp / name, out)
        with tempfile.TemporaryDirectory(prefix="c2d-quant-") as work:
            start = time.perf_counter()
            log(f"quantizing the generator: {mode}")
            target = budget.step_error / 2 if mixed_target is None else mixed_target
            info = quantize_generator_file(gen_file, tmp / GENERATOR_FILE, mode, recording, method, target, Path(work), log)
            seconds = time.perf_counter() - start
        vocoder_info = {"mode": "keep"}
        if vocoder_mode != "keep":
            log(f"quantizing the vocoder: {vocoder_mode}")
            vocoder_info = quantize_vocoder_file(bundle / VOCODER_FILE, tmp / VOCODER_FILE, vocoder_mode, meta.mel, budget)
        log(f"quality gate: {budget.count} samples per digit through both bundles, same noise")
        write_metadata(tmp / GENERATOR_FILE, meta)  # the runtime needs the metadata to sample during the gate
        write_manifest(tmp, manifest.as_dict())
        sampler, steps = (recording.info["sampler"], recording.info["steps"]) if recording is not None else (None, None)
        from c2d.runtime.generate import Generator

        accuracy = None if evaluator is None else (lambda log_mel, digits: evaluator_accuracy(log_mel, digits, meta.mel, evaluator))
        gate = quality_gate(Generator(bundle), Generator(tmp), budget, accuracy, sampler=sampler, steps=steps, log=log)
        if gate.failures:
            raise QuantizationError(f"{mode} failed the quality gate ({'; '.join(gate.failures)}); nothing written")
        quantization = {
            **info,
            "budget": asdict(budget),
            "measured": gate.summary(),
            "vocoder": vocoder_info,
            "seconds": round(seconds, 1),
            "source_sha256": file_sha256(gen_file),
        }
        write_metadata(tmp / GENERATOR_FILE, replace(meta, precision=mode, quantization=quantization))
        written = write_manifest(tmp, _quantized_manifest(manifest, mode, quantization))
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


def _quantized_manifest(source: Manifest, mode: str, quantization: dict) -> dict:
    """The source bundle's manifest as the quantized bundle's: its precision, what quantization did and measured."""
    manifest = source.as_dict()
    manifest["precision"] = mode
    manifest["quantization"] = quantization
    if quantization["vocoder"]["mode"] != "keep":
        manifest["vocoder"]["precision"] = quantization["vocoder"]["mode"]
    manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return manifest
