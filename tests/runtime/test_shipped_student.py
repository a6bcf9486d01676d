"""The student bundle shipped beside the default (runtime/bundles/student): forward-only, few calls, and named."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from tiny_models import assert_forward_only

from c2d.export.exporter import read_metadata
from c2d.runtime.bundle import decode_metadata, read_manifest
from c2d.runtime.generate import default_bundle, load, resolve_bundle, shipped_bundles

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def student() -> Path:
    bundles = shipped_bundles()
    assert list(bundles) == ["small", "student"]  # the default first: `c2d generate` without --bundle runs "small"
    assert resolve_bundle(None) == default_bundle() == bundles["small"]
    return bundles["student"]


def test_the_shipped_student_runs_few_calls_with_no_backward_pass(student):
    """Every Conv of its graph is one of the student's forward convolutions (no adjoint twins of the classifier's),
    no ConvTranspose; its default is at most 4 calls of under 0.6 of a guided step's MACs."""
    from c2d.models.checkpoint import build_student, load_checkpoint

    manifest = read_manifest(student)
    assert manifest.variant == "student"
    ckpt = load_checkpoint(ROOT / "models" / "checkpoints" / manifest.checkpoints["student"]["file"])
    model = onnx.load(str(student / str(manifest.generator.file)))
    assert_forward_only(model, build_student(ckpt))
    meta = decode_metadata({p.key: p.value for p in model.metadata_props})
    teacher = read_metadata(default_bundle() / str(read_manifest(default_bundle()).generator.file))
    assert meta.default_steps <= 4 and meta.macs_per_step < 0.6 * teacher.macs_per_step
    assert meta.distillation["objective"] in ("guided", "consistency") and meta.distillation["steps"] > 0
    assert ckpt["runs"] and all({"command", "cpu", "seconds"} <= set(r) for r in ckpt["runs"])  # how it was trained


def test_generate_by_name_runs_the_student_at_its_default(student, tmp_path):
    """`--bundle student` resolves to the shipped folder; the clip is the bundle's default sampler and steps."""
    import soundfile as sf
    from click.testing import CliRunner

    from c2d.cli import main

    res = CliRunner().invoke(main, ["generate", "--bundle", "student", "--digit", "7", "--quiet", "-o", str(tmp_path / "s.wav")])
    assert res.exit_code == 0, res.output
    audio, rate = sf.read(tmp_path / "s.wav")
    gen = load(student, "ort")
    meta = gen.meta
    assert rate == meta.mel.sample_rate and len(audio) == meta.mel.clip_samples and np.abs(audio).max() > 0.1
    run = gen.sample("7", seed=3, vocode=False)
    assert (run.sampler, run.steps) == (meta.default_sampler, meta.default_steps) and np.isfinite(run.log_mel).all()
