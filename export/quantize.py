"""`c2d quantize`: an fp32 bundle -> a quantized bundle that passed a quality gate against it, or nothing.

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

import collections
import contextlib
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from c2d.calibration.record import Recording, check_matches, load_recording
from c2d.export.exporter import read_metadata, write_metadata
from c2d.export.istft_basis import inline_istft_basis
from c2d.runtime.backends import BackendOptions
from c2d.runtime.backends.ort import session_options
from c2d.runtime.bundle import GENERATOR_FILE, MANIFEST, VOCODER_FILE, file_sha256, listed_files, read_manifest, stamp_files
from c2d.runtime.errors import C2DError
from c2d.runtime.files import atomic_path, replace_dir, staging_dir
from c2d.runtime.gate import Budget, quality_gate, reference_eps, replay_errors
from c2d.runtime.onnx_edit import unshare_initializers

MODES = ("int8-static", "int8-dynamic", "fp16", "mixed")
VOCODER_MODES = ("keep", "fp16", "int8-dynamic")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
CALIBRATION_CHUNK = 16  # recorded calls per MinMax calibration pass
HISTOGRAM_ROWS = 4  # rows per pass of the histogram calibrators (entropy, percentile), which keep every activation
SWEEP_CALLS = 8  # recorded calls (spread over the trajectory) that score each block in the sensitivity sweep


class QuantizationError(C2DError, RuntimeError):
    """The request cannot be met: bad mode or inputs, or the quantized model failed its quality gate."""


# --- graph preparation --------------------------------------------------------------------------------------


def name_nodes(model: onnx.ModelProto) -> None:
    """ORT's quantizer selects and excludes nodes by name: give every node one."""
    seen = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def float_only_nodes(model: onnx.ModelProto, data_input: str = "x") -> list[str]:
    """Nodes that do not depend on the data input: noise-level, time-embedding and guidance-scale arithmetic."""
    tainted = {data_input}
    keep = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if any(i in tainted for i in node.input):
            tainted.update(node.output)
        else:
            keep.append(node.name)
    return keep


def compact(path: Path) -> None:
    """Drop the inferred shapes and doc strings the quantizers leave behind (ORT infers them again on load)."""
    model = onnx.load(str(path))
    del model.graph.value_info[:]
    for node in model.graph.node:
        node.doc_string = ""
    onnx.save(model, str(path))


def prepare(src: Path, dst: Path) -> onnx.ModelProto:
    """ORT's pre-processing (constant folding: the adjoint's flipped weights become initializers, so they quantize too;
    its symbolic shape inference cannot read our dynamic-batch Reshapes, ONNX's shape inference runs instead), then
    named nodes, unshared weights, inferred shapes; written to dst (ORT's quantizers read files)."""
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    model = onnx.load(str(dst))
    name_nodes(model)
    unshare_initializers(model)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, str(dst))
    return model


def block_of(node: onnx.NodeProto) -> str:
    """Sweep unit: a subnet module (/subnet/fusions.2/...), a classifier module (/conv1_1/Conv), or the classifier's
    backward-pass operators, grouped by kind (they carry no module path)."""
    parts = node.name.strip("/").split("/")
    if parts[0] == "subnet" and len(parts) > 2:
        return "subnet." + parts[1]
    if len(parts) == 1:
        return "classifier-backward." + re.sub(r"_\d+$", "", parts[0])
    return "classifier." + re.sub(r"_\d+$", "", parts[0])


def activation_products(model: onnx.ModelProto) -> list[str]:
    """MatMuls of two activations (attention's scores and its weighted sum of values): kept float. Quantized, they
    make ONNX Runtime run the softmax between them as QLinearSoftmax and OpenVINO run them in f32 rather than bf16,
    so the step got slower, not faster (benchmarks/quantization.py); the projections (weight @ tokens) still quantize."""
    weights = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]


def quantizable_blocks(model: onnx.ModelProto, exclude: set[str]) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = collections.defaultdict(list)
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS and node.name not in exclude:
            blocks[block_of(node)].append(node.name)
    return dict(blocks)


# --- quantizers ---------------------------------------------------------------------------------------------


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]


def quantize_int8_static(
    model: Path, out: Path, recording: Recording | None, method: str, cache: Path, exclude: list[str], only: list[str] | None = None
) -> None:
    """QDQ int8; calibration runs once per (model, method) and is cached in `cache`, so a sweep re-quantizes cheaply."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from c2d.calibration.reader import RecordingReader

    # MinMax keeps two numbers per tensor and call; the histogram methods keep whole activations: small passes
    reader = None if recording is None else RecordingReader(recording, None if method == "minmax" else HISTOGRAM_ROWS)
    stride = 1 if reader is None else calibration_stride(len(reader), CALIBRATION_CHUNK if method == "minmax" else 1)
    quantize_static(
        str(model),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=only,
        nodes_to_exclude=exclude,
        calibrate_method=_calibration_method(method),
        calibration_cache_path=str(cache),
        extra_options={"CalibStridedMinMax": stride, "CalibPercentile": 99.99},
    )


def calibration_stride(calls: int, most: int = CALIBRATION_CHUNK) -> int:
    """Reader items per calibration pass: the largest divisor of `calls` up to `most` (ORT requires a divisor).

    ORT merges the ranges of successive passes. Not CalibMaxIntermediateOutputs: ORT 1.32's MinMax calibrator
    discards the outputs it has collected each time that many accumulate, without taking their ranges, so only the
    last (calls mod that many) calls were calibrated (and none when it divides the count: "No data is collected").
    """
    return max(d for d in range(1, min(calls, most) + 1) if calls % d == 0)


def quantize_int8_dynamic(model: Path, out: Path, exclude: list[str], op_types=("Conv", "MatMul")) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(model), str(out), op_types_to_quantize=list(op_types), per_channel=False, weight_type=QuantType.QInt8, nodes_to_exclude=exclude
    )


def convert_fp16(model: Path, out: Path, exclude: list[str]) -> None:
    """float16 inside, float32 at the inputs and outputs; the float-only arithmetic stays float32, and so does
    LayerNormalization: its InvStdDev output (the adjoint's rstd) is float32 whatever its input (stash_type), which
    the converter does not know. The converter appends the Casts it inserts, so the nodes are sorted again."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(
        onnx.load(str(model)), keep_io_types=True, node_block_list=exclude, op_block_list=DEFAULT_OP_BLOCK_LIST + ["LayerNormalization"]
    )
    sort_nodes(converted.graph)
    onnx.save(converted, str(out))


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Reorder graph.node topologically, wave by wave (ONNX requires the order; ORT refuses a graph without it)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise QuantizationError(f"the converted graph has a cycle or a missing input at {pending[0].name}")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for n in ready:
            available.update(n.output)
        ordered += ready
    del graph.node[:]
    graph.node.extend(ordered)


# --- measuring ----------------------------------------------------------------------------------------------


def cpu_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(BackendOptions(threads=threads)), providers=["CPUExecutionProvider"])


def session_eps(session: ort.InferenceSession) -> Callable[[dict], np.ndarray]:
    return lambda feeds: session.run(["eps"], feeds)[0]


def sweep_calls(recording: Recording, n: int = SWEEP_CALLS) -> list[dict[str, np.ndarray]]:
    """n recorded calls spread evenly over the recording (so over the noise levels)."""
    return [recording.call(int(i)) for i in np.linspace(0, recording.calls - 1, min(n, recording.calls)).astype(int)]


def sensitivity_sweep(
    model: onnx.ModelProto,
    prepared: Path,
    fp32_path: Path,
    recording: Recording,
    method: str,
    cache: Path,
    exclude: list[str],
    work: Path,
    log: Callable[[str], None],
) -> dict[str, float]:
    """Error against fp32 when only one block is quantized, for every block (worst first)."""
    calls = sweep_calls(recording)
    ref = reference_eps(session_eps(cpu_session(fp32_path)), calls)
    scores = {}
    blocks = quantizable_blocks(model, set(exclude))
    for k, (block, nodes) in enumerate(blocks.items()):
        path = work / f"sweep-{k}.onnx"
        quantize_int8_static(prepared, path, recording, method, cache, exclude, only=nodes)
        scores[block] = float(np.max(replay_errors(ref, session_eps(cpu_session(path)), calls)))
        path.unlink()
        log(f"  sweep {k + 1}/{len(blocks)} {block}: error {scores[block]:.4f}")
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))


def choose_float_blocks(
    model, prepared, fp32_path, recording, method, cache, exclude, scores: dict[str, float], target: float, work: Path, log
) -> tuple[list[str], float]:
    """The fewest of the worst blocks kept float with which the rest, in int8, meets `target` (fewest_float_blocks)."""
    blocks = quantizable_blocks(model, set(exclude))
    ranked = list(scores)
    calls = sweep_calls(recording)
    ref = reference_eps(session_eps(cpu_session(fp32_path)), calls)

    def error_with_float(n: int) -> float:
        extra = [name for b in ranked[:n] for name in blocks[b]]
        path = work / "mixed-trial.onnx"
        quantize_int8_static(prepared, path, recording, method, cache, exclude + extra)
        error = float(np.max(replay_errors(ref, session_eps(cpu_session(path)), calls)))
        log(f"  {n} block(s) float: error {error:.4f}")
        return error

    n, error = fewest_float_blocks(error_with_float, len(ranked), target)
    return ranked[:n], error


def fewest_float_blocks(error_with_float: Callable[[int], float], total: int, target: float) -> tuple[int, float]:
    """(n, its error): the smallest n of the ranked blocks to keep float so that error_with_float(n) <= target, or
    (total, its error) if none meets it. Doubling 0, 1, 2, 4, ... brackets it, then bisection between the last n
    that missed and the first that met the target (the error falls roughly monotonically as blocks stay float;
    doubling alone can keep up to twice the blocks needed)."""
    missed, n = -1, 0  # every n below is measured once: doubling's n are distinct, bisection's lie strictly between
    error = error_with_float(n)
    while error > target:
        if n >= total:
            return total, error
        missed, n = n, 1 if n == 0 else min(2 * n, total)
        error = error_with_float(n)
    met, met_error = n, error
    while met - missed > 1:
        middle = (missed + met) // 2
        error = error_with_float(middle)
        if error <= target:
            met, met_error = middle, error
        else:
            missed = middle
    return met, met_error


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
    gen_file = bundle / manifest["generator"]["file"]
    meta = read_metadata(gen_file)
    if meta.precision != "fp32":
        raise QuantizationError(f"{bundle} is already {meta.precision}; quantize from the fp32 bundle")
    recording = None
    if calib is not None:
        recording = load_recording(calib)
        check_matches(recording, bundle)
    if manifest["vocoder"].get("file") is None and vocoder_mode != "keep":
        raise QuantizationError(f"{bundle} uses the weight-free {manifest['vocoder']['kind']} vocoder; --vocoder-mode must be keep")
    check_destination(out)
    evaluator = None
    if evaluator_path is not None:
        from c2d.models.evaluator import load_evaluator

        evaluator = load_evaluator(evaluator_path)
    tmp = staging_dir(out)
    try:
        for name in (MANIFEST, *listed_files(manifest)):  # the bundle's own files only (not a machine's deployment.json)
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
        (tmp / MANIFEST).write_text(json.dumps(stamp_files(tmp, json.loads(json.dumps(manifest))), indent=2) + "\n")
        sampler, steps = (recording.info["sampler"], recording.info["steps"]) if recording is not None else (None, None)
        from c2d.runtime.generate import Generator

        accuracy = None if evaluator is None else (lambda log_mel, digits: evaluator_accuracy(log_mel, digits, meta.mel, evaluator))
        gate = quality_gate(Generator(bundle), Generator(tmp), budget, accuracy, sampler=sampler, steps=steps)
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
        manifest = _quantized_manifest(manifest, tmp, mode, quantization)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _quantized_manifest(manifest: dict, folder: Path, mode: str, quantization: dict) -> dict:
    manifest = json.loads(json.dumps(manifest))
    manifest["precision"] = mode
    manifest["quantization"] = quantization
    if quantization["vocoder"]["mode"] != "keep":
        manifest["vocoder"]["precision"] = quantization["vocoder"]["mode"]
    manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return stamp_files(folder, manifest)
