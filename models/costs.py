"""Parameters and multiply-accumulates (MACs) per sampling step, counted the way THOP counts.

THOP's rules, per leaf module: Conv = output elements x (C_in / groups x kh x kw); Linear = output elements x
in_features; normalisation = 2 x elements (x2 with an affine gain); activations, dropout and functional ops
count 0. Two additions THOP would miss: attention matmuls (QK^T and AV) and our channel RMS norm, counted like
the modules above, so the subnetwork is not flattered.

A backward pass that only needs gradients with respect to activations (the guidance gradient, the gradient
taps) costs the same MACs as the forward pass of the layers it traverses; the time-embedding MLP does not
depend on x and is never traversed. Per sampling step, batch 1, one 80 x 88 input:
  U-Net                         U-Net forward
  U-Net + classifier (guided)   U-Net forward + classifier forward + backward to x
  subnet (unconditional)        classifier forward + backward to the finest tap + subnet forward
  subnet (guided)               ... + backward to x (a second cotangent through the same classifier)
  without gradient taps         the backward to the taps is dropped (the subnet has no g-projections/attention)
  few-step student              classifier forward + the student (no taps, guidance seed; models/student.py):
                                no backward pass, the guidance distilled in
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from c2d.models.classifier import NoiseConditionedClassifier
from c2d.models.config import SIZES
from c2d.models.nn import ChannelRMSNorm, CrossAttention
from c2d.models.subnet import ScoreSubnet, SingleBackbone, classifier_pass
from c2d.models.unet import UNet

INPUT_SHAPE = (1, 1, 80, 88)


def _leaf_macs(module: nn.Module, inputs: tuple, output) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)):
        affine = getattr(module, "affine", False) or getattr(module, "elementwise_affine", False)
        return 2 * inputs[0].numel() * (2 if affine else 1)
    if isinstance(module, ChannelRMSNorm):
        return 4 * inputs[0].numel()
    if isinstance(module, CrossAttention):
        q, kv = inputs
        b, c, h, w = q.shape
        return 2 * b * h * w * kv.shape[2] * kv.shape[3] * c  # QK^T and AV; its Linears are counted on their own
    return 0


def trace_macs(root: nn.Module, run) -> dict[str, int]:
    """MACs per named module while `run()` executes: {module name: MACs}."""
    counts: dict[str, int] = {}
    handles = []
    for name, module in root.named_modules():

        def hook(mod, inputs, output, name=name):
            counts[name] = counts.get(name, 0) + _leaf_macs(mod, inputs, output)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return counts


@dataclass(frozen=True)
class ClassifierMacs:
    forward: int
    backward_to_x: int  # guidance gradient
    backward_to_taps: int  # gradient taps: stops at the finest tap h_0


def classifier_macs(classifier: NoiseConditionedClassifier) -> ClassifierMacs:
    x, t = torch.zeros(INPUT_SHAPE), torch.full((1,), 0.5)
    counts = trace_macs(classifier, lambda: classifier(x, t))
    total = sum(counts.values())
    x_dependent = sum(v for k, v in counts.items() if not k.startswith("encoder.time_embed"))
    before_h0 = sum(v for k, v in counts.items() if k.startswith(("encoder.input", "encoder.levels.0.")))
    return ClassifierMacs(total, x_dependent, x_dependent - before_h0)


def subnet_forward_macs(classifier: NoiseConditionedClassifier, subnet: ScoreSubnet) -> int:
    x, t = torch.zeros(INPUT_SHAPE), torch.full((1,), 0.5)
    _, taps, grads, _ = classifier_pass(classifier, x, t, subnet.cfg.use_gradient_taps)
    return sum(trace_macs(subnet, lambda: subnet(taps, grads, t)).values())


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@dataclass(frozen=True)
class CostRow:
    model: str
    params_total: int
    params_trainable: int  # trained for generation (the classifier is trained once, separately)
    macs_per_step: int


def cost_table(size: str = "small") -> list[CostRow]:
    """The paper's Table 1 cost columns for one named size (weights do not change the counts)."""
    sizes = SIZES[size]
    torch.manual_seed(0)
    cls = NoiseConditionedClassifier(sizes.classifier).eval()
    sub = ScoreSubnet(sizes.subnet, cls.tap_channels).eval()
    sub0 = ScoreSubnet(dataclasses.replace(sizes.subnet, use_gradient_taps=False), cls.tap_channels).eval()
    unet = UNet(sizes.unet).eval()
    c = classifier_macs(cls)
    m_sub, m_sub0 = subnet_forward_macs(cls, sub), subnet_forward_macs(cls, sub0)
    m_unet = sum(trace_macs(unet, lambda: unet(torch.zeros(INPUT_SHAPE), torch.full((1,), 0.5))).values())
    p_cls, p_sub, p_sub0, p_unet = n_params(cls), n_params(sub), n_params(sub0), n_params(unet)
    return [
        CostRow("U-Net, unconditional", p_unet, p_unet, m_unet),
        CostRow("Score subnet, unconditional", p_cls + p_sub, p_sub, c.forward + c.backward_to_taps + m_sub),
        CostRow("... without gradient taps", p_cls + p_sub0, p_sub0, c.forward + m_sub0),
        CostRow("U-Net + Classifier, guided", p_unet + p_cls, p_unet, m_unet + c.forward + c.backward_to_x),
        CostRow("Score subnet, guided", p_cls + p_sub, p_sub, c.forward + c.backward_to_taps + c.backward_to_x + m_sub),
        CostRow("... without gradient taps, guided", p_cls + p_sub0, p_sub0, c.forward + c.backward_to_x + m_sub0),
        student_cost_row(cls, sizes.subnet),
    ]


def student_cost_row(cls: NoiseConditionedClassifier, teacher_cfg) -> CostRow:
    """The few-step student of a teacher subnet config on cls, as `c2d train student --conditioning seed` builds it."""
    from c2d.models.student import Student, student_config
    from c2d.runtime.sde import SDEConfig

    student = Student(cls, student_config(teacher_cfg), SDEConfig(), int(cls.cfg.n_classes), conditioning="seed").eval()
    trainable = n_params(student.trainable())
    return CostRow("Few-step student (no backward pass)", n_params(cls) + trainable, trainable, guided_step_macs(student))


def format_cost_table(rows: list[CostRow]) -> str:
    by_name = {r.model: r for r in rows}
    two, one = by_name["U-Net + Classifier, guided"], by_name["Score subnet, guided"]
    lines = ["| model | params total [trainable] | GMACs/step |", "|---|---|---|"]
    lines += [f"| {r.model} | {r.params_total / 1e6:.2f} M [{r.params_trainable / 1e6:.2f}] | {r.macs_per_step / 1e9:.3f} |" for r in rows]
    lines.append("")
    lines.append(
        f"single backbone / two-model (guided): parameters {one.params_total / two.params_total:.2f}, "
        f"MACs {one.macs_per_step / two.macs_per_step:.2f} (paper: 0.50, 0.72)"
    )
    return "\n".join(lines)


def guided_step_macs(model) -> int:
    """MACs of one guided call (what one exported graph call computes) for a SingleBackbone, TwoModel or Student,
    batch 1."""
    from c2d.models.student import Student

    c = classifier_macs(model.classifier)
    if isinstance(model, Student):  # forward taps only, no backward pass; what learns: subnet, condition, seed
        x, t, y1 = torch.zeros(INPUT_SHAPE), torch.full((1,), 0.5), torch.eye(model.condition.digit.in_features)[:1]
        with torch.no_grad():
            return c.forward + sum(trace_macs(model.trainable(), lambda: model.raw(x, t, y1, torch.ones(1))).values())
    if isinstance(model, SingleBackbone):
        taps = c.backward_to_taps if model.subnet.cfg.use_gradient_taps else 0
        return c.forward + taps + c.backward_to_x + subnet_forward_macs(model.classifier, model.subnet)
    unet = model.unet
    return c.forward + c.backward_to_x + sum(trace_macs(unet, lambda: unet(torch.zeros(INPUT_SHAPE), torch.full((1,), 0.5))).values())
