"""Bad input and faults never destroy data, never escape the bundle, never end in a traceback (issue 19).

One section per class of fault: data destruction, bundle integrity, unbounded requests, tracebacks, silent wrong
results. Each test drives the real command (click's runner, or a subprocess where a signal is involved) on a copy
of the shipped bundle. The randomised probes are in test_fuzz.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import restamp

from c2d.cli import main
from c2d.runtime import files
from c2d.runtime.backends import BACKENDS, BackendOptions, open_backend
from c2d.runtime.bundle import BundleError, read_manifest
from c2d.runtime.contract import MANIFEST_FILE
from c2d.runtime.generate import GenerationError, Generator, default_bundle
from c2d.runtime.parity import verify_bundle

SHIPPED = default_bundle()


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "bundle"
    shutil.copytree(SHIPPED, path)
    return path


def run(*args: str):
    """The CLI in-process; returns click's Result."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_failure(res, *words: str, code: int | None = None) -> None:
    """Non-zero exit, no traceback, and the last line is one 'Error:' line naming the problem."""
    assert res.exit_code != 0, res.output
    if code is not None:
        assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:") and sum(line.startswith("Error:") for line in lines) == 1, res.output
    for word in words:
        assert word in res.output, res.output


def edit_manifest(bundle: Path, edit) -> None:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    edit(manifest)
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(".bak"))


# ---- 1. never destroy data ------------------------------------------------------------------------------------------


def test_export_refuses_a_folder_that_merely_holds_a_manifest(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "manifest.json").write_text('{"my": "own file"}')
    (out / "thesis.tex").write_text("years of work")
    res = run("export", tmp_path / "any.pt", "-o", out)
    assert_clean_failure(res, "refusing to replace")
    assert (out / "thesis.tex").read_text() == "years of work" and (out / "manifest.json").read_text() == '{"my": "own file"}'


def test_quantize_and_calibrate_refuse_a_bundle_folder_with_foreign_files(bundle, tmp_path):
    out = tmp_path / "q"
    shutil.copytree(bundle, out)
    (out / "notes.txt").write_text("keep me")
    assert_clean_failure(run("quantize", bundle, "--mode", "fp16", "-o", out), "notes.txt")
    assert (out / "notes.txt").read_text() == "keep me"
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "data.csv").write_text("1,2")
    assert_clean_failure(run("calibrate", bundle, "-o", calib, "--steps", "2"), "refusing to replace")
    assert (calib / "data.csv").read_text() == "1,2"


def test_generate_writes_through_a_symlink_and_refuses_non_regular_files(tmp_path):
    target = tmp_path / "real.wav"
    target.write_bytes(b"old")
    link = tmp_path / "link.wav"
    link.symlink_to(target)
    res = run("generate", "--digit", "3", "--steps", "2", "--quiet", "-o", link)
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and sf.info(str(target)).frames > 0
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    assert_clean_failure(run("generate", "--digit", "3", "--steps", "2", "-o", fifo), "a FIFO, not a regular file")
    assert_clean_failure(run("generate", "--digit", "3", "--steps", "2", "-o", tmp_path), "directory")
    if Path("/dev/null").exists():
        (tmp_path / "null.wav").symlink_to("/dev/null")
        assert_clean_failure(run("generate", "--digit", "3", "--steps", "2", "-o", tmp_path / "null.wav"), "character device")
        assert_clean_failure(run("generate", "--digit", "3", "--steps", "2", "-o", "/dev/null"), "c2d writes .wav or .flac")
    assert leftovers(tmp_path) == []


def test_a_multi_file_generate_is_all_or_nothing(tmp_path):
    for name in ("d-three-0.wav", "d-three-2.wav"):
        (tmp_path / name).write_bytes(b"earlier output")
    (tmp_path / "d-three-1.wav").mkdir()  # one name cannot be written
    res = run("generate", "--digit", "3", "--count", "3", "--steps", "2", "-o", tmp_path / "d.wav")
    assert_clean_failure(res, "d-three-1.wav")
    assert all((tmp_path / n).read_bytes() == b"earlier output" for n in ("d-three-0.wav", "d-three-2.wav"))
    assert leftovers(tmp_path) == []


def test_a_failed_rename_restores_the_files_already_replaced(tmp_path, monkeypatch):
    paths = [tmp_path / f"{k}.txt" for k in range(3)]
    for p in paths:
        p.write_text("old " + p.name)
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        with files.atomic_files(paths) as tmps:
            for tmp in tmps:
                tmp.write_text("new")
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert [p.read_text() for p in paths] == ["old 0.txt", "old 1.txt", "old 2.txt"]
    assert leftovers(tmp_path) == []


def test_a_signal_while_staging_leaves_nothing_and_one_during_the_commit_waits_for_it(tmp_path, monkeypatch):
    """The installed handler is called directly (a real signal in pytest's process could reach it after the test
    restored the default action; the subprocess test below sends a real one)."""
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    files.raise_on_signals()
    handler = signal.getsignal(signal.SIGTERM)
    for sig, h in old.items():
        signal.signal(sig, h)
    paths = [tmp_path / f"{k}.txt" for k in range(3)]
    with pytest.raises(files.Interrupted) as info:
        with files.atomic_files(paths) as tmps:
            tmps[0].write_text("half")
            handler(signal.SIGTERM, None)
    assert info.value.exit_code == 143 and not any(p.exists() for p in paths) and leftovers(tmp_path) == []
    real_commit = files._commit_all

    def commit_with_signal(tmps, targets):
        handler(signal.SIGTERM, None)  # held back until every file is in place
        real_commit(tmps, targets)

    monkeypatch.setattr(files, "_commit_all", commit_with_signal)
    with pytest.raises(files.Interrupted):
        with files.atomic_files(paths) as tmps:
            for tmp in tmps:
                tmp.write_text("new")
    assert [p.read_text() for p in paths] == ["new"] * 3 and leftovers(tmp_path) == []


@pytest.mark.slow
def test_sigterm_during_generate_exits_143_and_leaves_no_temporary_files(tmp_path):
    (tmp_path / "x-one-1.wav").write_bytes(b"earlier output")
    proc = subprocess.Popen(
        [sys.executable, "-m", "c2d", "generate", "--digit", "1", "--count", "4", "--steps", "400", "--threads", "1", "-o", str(tmp_path / "x.wav")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, deadline = "", time.time() + 120
    while "ancestral" not in seen and time.time() < deadline and proc.poll() is None:  # the progress bar: sampling has begun
        seen += proc.stderr.read(1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    err = seen + err
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM" in err
    assert (tmp_path / "x-one-1.wav").read_bytes() == b"earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-one-1.wav"]


# ---- 2. bundle integrity --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../generator.onnx", "/etc/passwd", "sub/generator.onnx", "..", ""])
def test_manifest_file_names_never_leave_the_bundle(bundle, name):
    edit_manifest(bundle, lambda m: m["generator"].update(file=name))
    with pytest.raises(BundleError, match="generator.file"):
        read_manifest(bundle)
    assert_clean_failure(run("inspect", bundle), "generator.file")
    assert_clean_failure(run("generate", "--bundle", bundle, "--digit", "1", "--steps", "2", "-o", bundle.parent / "o.wav"), "generator.file")
    assert_clean_failure(run("quantize", bundle, "--mode", "fp16", "-o", bundle.parent / "q"), "generator.file")


def test_a_symlink_inside_the_bundle_pointing_out_is_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(bundle / "generator.onnx", outside)
    (bundle / "generator.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        read_manifest(bundle)


def test_changed_weights_fail_the_sha256_check(bundle):
    model = bundle / "generator.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256"):
        Generator(bundle)
    assert_clean_failure(run("inspect", bundle), "SHA-256")
    assert_clean_failure(run("generate", "--bundle", bundle, "--digit", "1", "-o", bundle.parent / "o.wav"), "SHA-256")
    assert not (bundle.parent / "o.wav").exists()


def test_non_finite_reference_values_fail_instead_of_passing(bundle):
    with np.load(bundle / "reference.npz") as data:
        arrays = dict(data)
    arrays["c0.eps"] = np.full_like(arrays["c0.eps"], np.nan)
    np.savez(bundle / "reference.npz", **arrays)
    assert_clean_failure(run("inspect", bundle), "SHA-256")  # the file changed after export
    restamp(bundle)
    with pytest.raises(BundleError, match="non-finite"):
        verify_bundle(bundle)
    assert_clean_failure(run("inspect", bundle, "--verify"), "non-finite")


@pytest.mark.slow
def test_inspect_verify_passes_on_the_shipped_bundle_and_fails_on_a_changed_graph(bundle):
    res = run("inspect", SHIPPED, "--verify")
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "SHA-256" in res.output
    model = onnx.load(str(bundle / "generator.onnx"))
    init = next(t for t in model.graph.initializer if t.dims and np.prod(t.dims) > 1000)
    values = onnx.numpy_helper.to_array(init) * 1.5
    init.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), init.name))
    onnx.save(model, str(bundle / "generator.onnx"))
    restamp(bundle)  # hashes match again: only running it can tell
    assert_clean_failure(run("inspect", bundle, "--verify"), "failed verification")


# ---- 3. unbounded requests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, word",
    [
        (["generate", "--digit", "1", "--steps", "100000"], "--steps"),
        (["generate", "--digit", "1", "--count", "100000"], "--count"),
        (["generate", "--digit", "1", "--threads", "100000"], "--threads"),
        (["generate", "--digit", "1", "--sample-rate", "1000000000"], "--sample-rate"),
        (["generate", "--digit", "1", "--seed", "-1"], "--seed"),
        (["generate", "--digit", "1", "--guidance", "1e30"], "--guidance"),
        (["generate", "--digit", "1", "--peak-dbfs", "nan"], "--peak-dbfs"),
        (["generate", "--digit", "1", "--peak-dbfs", "-inf"], "--peak-dbfs"),
        (["profile", "--batch", "100000"], "--batch"),
        (["profile", "--steps", "0"], "--steps"),
        (["calibrate", str(SHIPPED), "-o", "c", "--seeds", "10000"], "--seeds"),
        (["evaluate", "--count", "10000000"], "--count"),
        (["vocode", __file__, "-o", "x.wav", "--threads", "0"], "--threads"),
    ],
)
def test_size_like_options_are_bounded(args, word, tmp_path):
    res = run(*args, *(["-o", tmp_path / "x.wav"] if args[0] == "generate" else []))
    assert res.exit_code == 2 and word in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "x.wav").exists()


def test_more_samples_than_a_run_holds_are_refused_before_sampling(tmp_path):
    res = run("generate", *sum((["--digit", str(d)] for d in range(10)), []), "--count", "101", "-o", tmp_path / "x.wav")
    assert_clean_failure(res, "1010 samples")


def test_the_api_bounds_the_same_requests():
    gen = Generator()
    for kwargs, word in [
        ({"steps": 10**6}, "steps"),
        ({"count": 10**6}, "count"),
        ({"guidance": float("inf")}, "guidance"),
        ({"seed": -3}, "seed"),
        ({"batch_size": 10**5}, "batch size"),
        ({"count": "3"}, "count"),
    ]:
        with pytest.raises(GenerationError, match=word):
            gen.sample("7", **kwargs)


def test_per_step_noise_is_drawn_per_step_with_the_same_numbers():
    from c2d.runtime.samplers import StepNoise, draw_noise, draw_noise_per_step

    x_T, upfront = draw_noise([4, 11], 6, (1, 3, 5))
    y_T, lazy = draw_noise_per_step([4, 11], 6, (1, 3, 5))
    assert isinstance(lazy, StepNoise) and np.array_equal(x_T, y_T)
    assert all(np.array_equal(upfront[i], lazy[i]) for i in range(6))
    with pytest.raises(IndexError, match="in order"):
        lazy[2]


# ---- 4. one line, never a traceback ---------------------------------------------------------------------------------


def _truncate(bundle):
    path = bundle / "generator.onnx"
    path.write_bytes(path.read_bytes()[:50_000])


def _empty(bundle):
    (bundle / "generator.onnx").write_bytes(b"")


def _rename_input(bundle):
    model = onnx.load(str(bundle / "generator.onnx"))
    old = model.graph.input[0].name
    model.graph.input[0].name = "z"
    for node in model.graph.node:
        node.input[:] = ["z" if i == old else i for i in node.input]
    onnx.save(model, str(bundle / "generator.onnx"))


def _set_metadata(key, value):
    def edit(bundle):
        model = onnx.load(str(bundle / "generator.onnx"))
        for prop in model.metadata_props:
            if prop.key == key:
                prop.value = value
        onnx.save(model, str(bundle / "generator.onnx"))

    return edit


@pytest.mark.parametrize(
    "damage, word",
    [
        (_truncate, "cannot load"),
        (_empty, "generator.bytes = 0"),
        (_rename_input, "lacks x"),
        (_set_metadata("c2d.default_steps", "-3"), "c2d.default_steps"),
        (_set_metadata("c2d.labels", '["zero", "one"]'), "trailing dims"),
        (_set_metadata("c2d.mel", '{"n_mels": "80"}'), "c2d.mel.n_mels"),
        (_set_metadata("c2d.default_guidance", "NaN"), "c2d.default_guidance"),
        (_set_metadata("c2d.variant", "{not json"), "not JSON"),
    ],
)
def test_a_damaged_generator_is_one_line(bundle, tmp_path, damage, word):
    damage(bundle)
    restamp(bundle)
    res = run("generate", "--bundle", bundle, "--digit", "1", "--steps", "2", "-o", tmp_path / "o.wav")
    assert_clean_failure(res, word)
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("manifest", ["[]", '"bundle"', "{}", '{"format_version": "1"}', "\x00\x01"])
def test_a_manifest_of_the_wrong_type_is_one_line(bundle, manifest):
    (bundle / MANIFEST_FILE).write_text(manifest)
    assert_clean_failure(run("inspect", bundle), "manifest.json")


@pytest.mark.parametrize("target", ["/proc/c2d-probe.wav", "{file}/inside.wav"])
def test_an_unwritable_output_is_one_line(tmp_path, target):
    (tmp_path / "plain").write_text("a file, not a folder")
    out = target.format(file=tmp_path / "plain")
    assert_clean_failure(run("generate", "--digit", "1", "--steps", "2", "--quiet", "-o", out))
    assert (tmp_path / "plain").read_text() == "a file, not a folder"


def test_a_checkpoint_with_missing_entries_is_one_line(tmp_path):
    import torch

    for bad in ({"format": 1, "kind": "subnet"}, {"format": "one", "kind": "subnet"}, {"format": 1, "kind": "subnet", "config": 5}):
        torch.save(bad, tmp_path / "bad.pt")
        assert_clean_failure(run("sample", "--checkpoint", tmp_path / "bad.pt", "--steps", "1", "-o", tmp_path / "x.npy"), "bad.pt")
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.slow
def test_a_wav_with_nan_samples_is_one_line(tmp_path):
    data = tmp_path / "fsdd"
    data.mkdir()
    wave = np.zeros(8000, np.float32)
    wave[100] = np.nan
    sf.write(data / "3_jackson_5.wav", wave, 8000, subtype="FLOAT")
    assert_clean_failure(run("features", "--data", data, "-o", tmp_path / "f.npz"), "NaN")
    assert not (tmp_path / "f.npz").exists()


def test_python_api_misuse_is_a_clear_error():
    gen = Generator()
    with pytest.raises(GenerationError, match="no digits"):
        gen.sample([])
    assert gen.sample([np.int64(4)], steps=2, vocode=False).digits == [4]
    for bad in (4.5, None, {"d": 4}, [[4]], True):
        with pytest.raises(GenerationError):
            gen.sample(bad, steps=2)


def test_a_bad_calibration_folder_is_one_line(bundle, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "info.json").write_text("[]")
    (calib / "feeds.npz").write_bytes(b"junk")
    assert_clean_failure(run("quantize", bundle, "--mode", "int8-static", "--calib", calib, "-o", tmp_path / "q"), str(calib))


# ---- 5. no silent wrong results -------------------------------------------------------------------------------------


class ZeroGenerator:
    """A generator whose eps output is all zeros (its vocoder, opened on the same backend, is left intact)."""

    def __init__(self, path, options):
        self.inner = open_backend("ort", path, BackendOptions(threads=1))
        self.input_names, self.output_names = self.inner.input_names, self.inner.output_names

    def metadata(self):
        return self.inner.metadata()

    def run(self, feeds, outputs=None):
        out = self.inner.run(feeds, outputs)
        return out if "mel" in feeds else [np.zeros_like(o) for o in out]


def test_a_generator_that_outputs_zeros_is_an_error_not_noise(monkeypatch, tmp_path):
    monkeypatch.setitem(BACKENDS, "zeros", ZeroGenerator)
    with pytest.raises(GenerationError, match="all zeros"):
        Generator(SHIPPED, "zeros").sample("5", steps=2)


def test_plot_without_matplotlib_fails_before_anything_is_written(monkeypatch, tmp_path):
    from c2d.runtime import files

    def no_matplotlib():
        raise ImportError("plots need matplotlib: pip install matplotlib")

    monkeypatch.setattr(files, "pyplot", no_matplotlib)
    res = run("generate", "--digit", "2", "--steps", "2", "--plot", "-o", tmp_path / "two.wav")
    assert_clean_failure(res, "matplotlib")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_profile_all_never_writes_into_a_bundle_folder_unless_asked(bundle, private_deployment_cache, monkeypatch):
    from c2d.runtime import deployment

    monkeypatch.setattr(deployment, "available_candidates", lambda: [deployment.Candidate("ort", "fp32")])  # time only ORT
    res = run("profile", bundle, "--backend", "all", "--threads", "1", "--steps", "2")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in bundle.iterdir()) == sorted(p.name for p in SHIPPED.iterdir() if p.name != "__pycache__")
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)  # a read-only install (root ignores permission bits)
    assert_clean_failure(run("profile", bundle, "--backend", "all", "--in-bundle", "--steps", "2"), "not writable")


# --- outputs never alias inputs (issue 33, class 1) -------------------------------------------------------------


@pytest.fixture
def bundle_copy(tmp_path):
    import shutil

    from c2d.runtime.generate import default_bundle

    b = tmp_path / "b"
    shutil.copytree(default_bundle(), b)
    return b


def _digests(folder):
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize(
    "args,message",
    [
        (["generate", "--bundle", "{b}", "--digit", "7", "-o", "{b}/generator.onnx"], "lies inside the input --bundle"),
        (["profile", "{b}", "--steps", "1", "--json", "{b}/manifest.json"], "lies inside the input BUNDLE"),
        (["profile", "{b}", "--steps", "1", "--json", "{t}/x.json", "--markdown", "{t}/x.json"], "name the same file"),
        (["evaluate", "{b}", "--json", "{b}/scores.json"], "lies inside the input BUNDLE"),
        (["calibrate", "{b}", "-o", "{t}"], "would replace the folder that holds the input BUNDLE"),
        (["quantize", "{b}", "--mode", "fp16", "-o", "{b}/q"], "lies inside the input BUNDLE"),
        (["vocode", "{t}/m.npy", "-o", "{t}/m.npy"], "is the input MELS"),
        (["sample", "--checkpoint", "{t}/s.pt", "--digit", "3", "-o", "{t}/s.pt"], "is the input --checkpoint"),
        (["export", "{t}/s.pt", "-o", "{t}"], "would replace the folder that holds the input CHECKPOINT"),
        (["train", "subnet", "--classifier", "{t}/c.pt", "-o", "{t}/c.pt"], "is the input --classifier"),
    ],
)
def test_an_output_that_names_an_input_is_refused_and_nothing_changes(tmp_path, bundle_copy, args, message):
    import numpy as np

    np.save(tmp_path / "m.npy", np.full((1, 80, 88), -5.0, np.float32))
    for name in ("s.pt", "c.pt"):
        (tmp_path / name).write_bytes(b"not really a checkpoint")
    before_bundle = _digests(bundle_copy)
    before_files = _digests(tmp_path)
    argv = [a.format(b=bundle_copy, t=tmp_path) for a in args]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 1 and message in res.output, res.output
    assert _digests(bundle_copy) == before_bundle and _digests(tmp_path) == before_files
    assert sorted(p.name for p in bundle_copy.iterdir()) == sorted(before_bundle)


def test_the_shipped_bundle_is_an_input_when_no_bundle_is_named(tmp_path):
    from c2d.runtime.generate import default_bundle

    target = default_bundle() / "generator.onnx"
    before = target.read_bytes()
    res = CliRunner().invoke(main, ["generate", "--digit", "7", "-o", str(target)])
    assert res.exit_code == 1 and "lies inside the input --bundle" in res.output, res.output
    assert target.read_bytes() == before


# --- the Python API enforces the CLI's bounds (issue 33, class 6) -------------------------------------------------


@pytest.mark.parametrize("peak", [float("nan"), 6.0, -200.0, "loud"])
def test_generate_refuses_a_peak_level_out_of_bounds(peak):
    gen = Generator()
    with pytest.raises(GenerationError, match="peak_dbfs must be"):
        gen.generate(7, peak_dbfs=peak, steps=1)


@pytest.mark.parametrize("threads", [0, 100_000, 2.5, True])
def test_backend_options_refuse_threads_out_of_bounds(threads):
    from c2d.runtime.backends import BackendOptionsError

    with pytest.raises(BackendOptionsError, match="threads"):
        BackendOptions(threads=threads)


# --- crash leftovers (issue 33, class 4) ---------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_kill_9_during_export_leaves_a_staging_folder_the_next_export_removes(tmp_path):
    """The staging folder carries the owner's PID; the next run that writes there removes leftovers whose process is
    gone and keeps those of a live one."""
    from c2d.models.checkpoints import SHIPPED_SUBNET, shipped_checkpoint

    out = tmp_path / "E"
    proc = subprocess.Popen(
        [sys.executable, "-m", "c2d", "export", str(shipped_checkpoint(SHIPPED_SUBNET)), "-o", str(out), "--vocoder", "griffin-lim"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = tmp_path / f".E.tmp-{proc.pid}"
    deadline = time.time() + 120
    while not (staging.is_dir() and any(staging.iterdir())) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert staging.is_dir(), "the export finished or failed before it could be killed"
    alive = tmp_path / f".E.tmp-{os.getppid()}"  # a live process's staging folder (pytest's parent) is not touched
    alive.mkdir()
    stale_file = tmp_path / f".E.{_dead_pid()}.bak"
    stale_file.write_text("x")
    res = run("export", str(shipped_checkpoint(SHIPPED_SUBNET)), "-o", str(out), "--vocoder", "griffin-lim")
    assert res.exit_code == 0, res.output
    assert not staging.exists() and not stale_file.exists() and alive.is_dir()
    assert (out / "generator.onnx").is_file()


def test_a_stale_temporary_file_beside_a_wav_is_removed_by_the_next_write(tmp_path):
    from c2d.runtime.files import atomic_write_text

    stale = tmp_path / f".x.txt.{_dead_pid()}.tmp"
    stale.write_text("half")
    mine_elsewhere = tmp_path / f".y.txt.{_dead_pid()}.tmp"  # another output's leftover: not this write's business
    mine_elsewhere.write_text("half")
    atomic_write_text(tmp_path / "x.txt", "whole")
    assert not stale.exists() and mine_elsewhere.exists() and (tmp_path / "x.txt").read_text() == "whole"


# --- memory of multi-sample runs (issue 33, class 7) ---------------------------------------------------------------


def _peak_rss_kb(args: list[str]) -> int:
    """Peak resident memory of `c2d ARGS` run in a fresh process of its own."""
    code = (
        "import resource, subprocess, sys; r = subprocess.run([sys.executable, '-m', 'c2d'] + sys.argv[1:], "
        "capture_output=True); assert r.returncode == 0, r.stderr; print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1])


@pytest.mark.slow
def test_generate_memory_grows_with_the_batch_not_with_the_count(tmp_path):
    """Each batch is vocoded and written to its temporary file as it is made: 160 samples peak within 40 MB of 16
    (before: every waveform, log-Mel and the vocoder's activations for all of them at once, about 0.4 MB a sample
    and a gigabyte at --count 1000). 16, not 8: ONNX Runtime's arena grows once, on the second full batch."""
    few = _peak_rss_kb(["generate", "--digit", "3", "--count", "16", "--steps", "1", "--quiet", "--threads", "1", "-o", str(tmp_path / "a.wav")])
    many = _peak_rss_kb(["generate", "--digit", "3", "--count", "160", "--steps", "1", "--quiet", "--threads", "1", "-o", str(tmp_path / "b.wav")])
    assert many - few < 40_000, (few, many)
    assert len(list(tmp_path.glob("b-three-*.wav"))) == 160


# --- concurrent users (issue 33, class 3) --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_one_generator_serves_several_threads(backend, tmp_path):
    """Four Python threads share one Generator: every call succeeds and gives what a lone call gives (OpenVINO raised
    "Infer Request is busy" in 3 of 4 calls before its calls took turns)."""
    import importlib.util
    from concurrent.futures import ThreadPoolExecutor

    if backend == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed")
    gen = Generator(backend=backend, options=BackendOptions(threads=1, cache_dir=tmp_path))
    lone = gen.generate(7, steps=2, seed=5)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: gen.generate(7, steps=2, seed=5), range(4)))
    for audio in results:
        np.testing.assert_allclose(audio, lone, atol=1e-5)


@pytest.mark.slow
def test_compiles_of_one_model_in_several_processes_take_turns(tmp_path):
    """The OpenVINO cache lock is exclusive across processes: a second holder waits for the first."""
    from c2d.runtime.backends.openvino import cache_lock

    code = (
        "import sys, time; from pathlib import Path; from c2d.runtime.backends.openvino import cache_lock\n"
        "with cache_lock(Path(sys.argv[1])):\n    print(time.time(), flush=True)"
    )
    with cache_lock(tmp_path):
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        released = time.time()
    entered = float(proc.communicate(timeout=60)[0].split()[-1])
    assert entered >= released


# --- damaged caches and inputs (issue 33, class 5) -----------------------------------------------------------------


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    "content",
    [
        "fifo",
        '{"format": 1, "choice": {"backend": ["ort"], "precision": "fp32", "step_ms": 1}}',
        '{"a": ' + _deep(5000) + "}",
        '{"format": ' + "9" * 5000 + "}",
    ],
)
def test_a_damaged_deployment_profile_is_ignored_with_a_reason(bundle, tmp_path, content):
    """A FIFO is refused without being opened (it blocked generate until killed); a list where a name belongs, JSON
    nested 5,000 deep and a 5,000-digit number are one reason each, and the run goes on ORT."""
    from c2d.runtime.contract import DEPLOYMENT_FILE

    profile = bundle / DEPLOYMENT_FILE
    if content == "fifo":
        os.mkfifo(profile)
    else:
        profile.write_text(content)
    res = run("generate", "--bundle", str(bundle), "--digit", "7", "--steps", "1", "-o", str(tmp_path / "x.wav"))
    assert res.exit_code == 0, res.output
    assert "ort fp32" in res.output and "ignored" in res.output
    assert (tmp_path / "x.wav").is_file()


@pytest.mark.parametrize("damage", ["deep", "number", "huge", "fifo"])
def test_a_damaged_manifest_is_one_line(bundle, tmp_path, damage):
    manifest = bundle / MANIFEST_FILE
    if damage == "deep":
        manifest.write_text('{"x": ' + _deep(5000) + "}")
    elif damage == "number":
        manifest.write_text('{"format_version": ' + "1" * 5000 + "}")
    elif damage == "huge":
        with open(manifest, "r+b") as f:  # sparse: 4 GB on paper, nothing read
            f.truncate(4 << 30)
    else:
        manifest.unlink()
        os.mkfifo(manifest)
    res = run("generate", "--bundle", str(bundle), "--digit", "7", "--steps", "1", "-o", str(tmp_path / "x.wav"))
    assert_clean_failure(res, "manifest")
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "npy", "labels", "mels64", "nan", "fifo"])
def test_a_damaged_features_file_is_one_line(tmp_path, synth, damage):
    path = tmp_path / "f.npz"
    x, y = synth.x.copy(), synth.y.copy()
    if damage == "labels":
        y[0] = 12
    if damage == "mels64":
        x = x[:, :, :64]
    if damage == "nan":
        x[0, 0, 0, 0] = np.nan
    np.savez_compressed(path, x=x, y=y, speakers=synth.speakers, is_test=np.zeros(len(y), bool))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "npy":
        path = tmp_path / "f.npy"
        np.save(path, x)
    elif damage == "fifo":
        path = tmp_path / "fifo.npz"
        os.mkfifo(path)
    res = run("train", "classifier", "--size", "tiny", "--steps", "1", "--features", str(path), "-o", str(tmp_path / "c.pt"))
    assert_clean_failure(res, "feature file")
    assert not (tmp_path / "c.pt").exists()


def test_a_damaged_feature_cache_is_rebuilt(tmp_path, monkeypatch):
    """The per-user feature cache is derived data: a truncated entry is computed again, not fatal."""
    from c2d.models import data

    folder = tmp_path / "fsdd"
    folder.mkdir()
    t = np.arange(4000) / 8000
    for d in (1, 2):
        for k in (0, 7):
            sf.write(folder / f"{d}_ann_{k}.wav", (0.3 * np.sin(2 * np.pi * (300 + 200 * d) * t)).astype(np.float32), 8000)
    first = data.load_features("all", folder, cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("fsdd-*.npz")
    entry.write_bytes(entry.read_bytes()[:300])
    again = data.load_features("all", folder, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.x, again.x)


@pytest.mark.parametrize("damage", ["deep", "fifo"])
def test_a_damaged_calibration_description_is_one_line(tmp_path, damage):
    from c2d.calibration.record import INFO_FILE, CalibrationError, load_recording

    calib = tmp_path / "calib"
    calib.mkdir()
    np.savez(
        calib / "feeds.npz",
        x=np.zeros((1, 1, 80, 88), np.float32),
        t=np.zeros(1, np.float32),
        y=np.zeros((1, 10), np.float32),
        gamma=np.zeros(1, np.float32),
        offsets=np.array([0, 1]),
        step=np.array([1]),
    )
    if damage == "deep":
        (calib / INFO_FILE).write_text(_deep(5000))
    else:
        os.mkfifo(calib / INFO_FILE)
    with pytest.raises(CalibrationError, match="calibration description"):
        load_recording(calib)


def test_a_checkpoint_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch):
    """torch reports a failed write (a full disk) as a RuntimeError from its zip writer: c2d names the file."""
    import torch

    from c2d.models.checkpoint import atomic_torch_save

    def full_disk(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    target = tmp_path / "c.pt"
    with pytest.raises(OSError, match="cannot write the checkpoint") as info:
        atomic_torch_save({"a": 1}, target)
    assert info.value.filename == str(target) and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_openvino_runs_with_a_cache_folder_it_cannot_write(tmp_path):
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")  # mkdir fails under it for root too
    gen = Generator(backend="openvino", options=BackendOptions(threads=1, cache_dir=blocked / "cache"))
    assert gen.generate(7, steps=1).shape[0] == 1


def test_quantize_on_a_full_disk_names_the_output_and_leaves_no_staging_folder(bundle, tmp_path, monkeypatch):
    from c2d.export import quantize

    def full(src, dst, *a, **k):
        raise OSError(28, "No space left on device", str(src))

    monkeypatch.setattr(quantize.shutil, "copy2", full)
    res = run("quantize", str(bundle), "--mode", "fp16", "-o", str(tmp_path / "q"))
    assert_clean_failure(res, "No space left on device", str(tmp_path / "q"))
    assert "manifest.json:" not in res.output.splitlines()[-1].split("(")[0]
    assert not list(tmp_path.glob(".q*")) and not (tmp_path / "q").exists()


@pytest.mark.slow
def test_a_calibration_folder_with_an_old_range_cache_can_be_replaced(bundle, tmp_path):
    """c2d before this release wrote ranges-*.json into the calibration folder; calibrate may still replace it."""
    calib = tmp_path / "calib"
    assert run("calibrate", str(bundle), "-o", str(calib), "--steps", "2").exit_code == 0
    (calib / "ranges-minmax-0123456789ab.json").write_text("{}")
    res = run("calibrate", str(bundle), "-o", str(calib), "--steps", "2")
    assert res.exit_code == 0, res.output


def test_a_legal_254_byte_output_name_is_written(tmp_path):
    name = "x" * 250 + ".wav"  # 254 bytes: legal, but a hidden temporary name built from it would not be
    res = run("generate", "--digit", "7", "--steps", "1", "-o", str(tmp_path / name))
    assert res.exit_code == 0, res.output
    assert (tmp_path / name).is_file() and [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("damage", ["rank", "nan", "offsets"])
def test_damaged_calibration_feeds_are_one_line(tmp_path, damage):
    from c2d.calibration.record import INFO_FILE, CalibrationError, load_recording

    calib = tmp_path / "calib"
    calib.mkdir()
    x = np.zeros((2, 1, 80, 88), np.float32)
    offsets = np.array([0, 1, 2])
    if damage == "rank":
        x = x[:, 0]
    if damage == "nan":
        x[0, 0, 0, 0] = np.nan
    if damage == "offsets":
        offsets = np.array([0, 2, 1])
    np.savez(
        calib / "feeds.npz",
        x=x,
        t=np.zeros(2, np.float32),
        y=np.zeros((2, 10), np.float32),
        gamma=np.zeros(2, np.float32),
        offsets=offsets,
        step=np.array([1, 2]),
    )
    (calib / INFO_FILE).write_text('{"generator_sha256": "0"}')
    with pytest.raises(CalibrationError, match="feeds.npz"):
        load_recording(calib)


def test_a_symlink_loop_as_output_is_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    res = run("generate", "--digit", "7", "--steps", "1", "-o", str(tmp_path / "a"))
    assert_clean_failure(res, str(tmp_path / "a"))


@pytest.mark.slow
def test_several_processes_compile_into_one_openvino_cache(tmp_path):
    """Three processes open the shipped bundle on OpenVINO at once with one fresh model cache: all succeed, and a
    fourth finds the cache filled."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed")
    code = (
        "import sys; from pathlib import Path; from c2d.runtime.backends import BackendOptions; "
        "from c2d.runtime.generate import Generator; "
        "g = Generator(backend='openvino', options=BackendOptions(threads=1, cache_dir=Path(sys.argv[1]))); "
        "assert g.generate(7, steps=1).shape[0] == 1"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ov")], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert any((tmp_path / "ov").glob("*.blob"))
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "ov")]).returncode == 0


def test_a_shipped_bundle_is_named_and_a_folder_of_that_name_wins(tmp_path, monkeypatch):
    from c2d.runtime.generate import resolve_bundle, shipped_bundles

    shipped = shipped_bundles()
    assert next(iter(shipped)) == "small" and shipped["small"] == default_bundle()
    assert resolve_bundle(None) == default_bundle() and resolve_bundle("small") == default_bundle()
    res = run("generate", "--bundle", "small", "--digit", "1", "--steps", "1", "-o", tmp_path / "o.wav")
    assert res.exit_code == 0, res.output
    assert_clean_failure(run("generate", "--bundle", "no-such-bundle", "--digit", "1", "-o", tmp_path / "p.wav"), "no-such-bundle", "shipped: small")
    assert not (tmp_path / "p.wav").exists()
    (tmp_path / "f").write_text("x")
    assert_clean_failure(run("profile", str(tmp_path / "f")), "is a file")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small").mkdir()  # a folder here named like a shipped bundle is what the user means
    assert resolve_bundle("small") == Path("small")
    assert_clean_failure(run("generate", "--bundle", "small", "--digit", "1", "-o", tmp_path / "q.wav"), "small")
