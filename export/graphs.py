"""Export wrappers: what goes into each ONNX graph. Autograd-free, so the TorchScript ONNX exporter traces them.

Every generator graph has the same interface, so the runtime and the profiler treat all variants alike:
  inputs   x [B, 1, n_mels, T] (x_t), t [B], y [B, K] (one-hot class; any weights allowed), gamma [B] (0 = unguided)
  outputs  eps [B, 1, n_mels, T]   guided noise prediction eps - gamma sigma_t grad_x log p(y | x_t, t)
           logits [B, K]           the classifier's logits at (x_t, t)
           guidance [B, 1, n_mels, T]  grad_x log p(y | x_t, t)
The noise prediction, not the score, leaves the graph: dividing by a tiny sigma_t inside it amplifies error.
"""

from __future__ import annotations

import torch
from torch import nn

from c2d.export.adjoint import ClassifierAdjoint, guidance_cotangent, split_copies
from c2d.models.precond import eps_from_output
from c2d.models.student import Student
from c2d.models.subnet import SingleBackbone, subnet_eps
from c2d.models.unet import TwoModel, unet_eps
from c2d.runtime.sde import SDEConfig, log_alpha


def sigma_t(t: torch.Tensor, sde: SDEConfig) -> torch.Tensor:
    """sigma_t = sqrt(-expm1(2 log alpha_t)) = sqrt(-2 e^h sinh(h)), h = log alpha_t <= 0.

    ONNX has neither Expm1 nor (in the TorchScript exporter) Sinh, and 1 - exp(2h) loses about 1.2e-4 of sigma
    at t_min in float32 (tests/test_export.py); sinh comes from its Taylor series where |h| < 0.5 (relative error < 3e-6) and from
    exponentials elsewhere, where cancellation is mild.
    """
    h = log_alpha(t, sde)
    h2 = h * h
    series = h * (1.0 + h2 / 6.0 * (1.0 + h2 / 20.0 * (1.0 + h2 / 42.0)))
    sinh = torch.where(h.abs() < 0.5, series, 0.5 * (torch.exp(h) - torch.exp(-h)))
    return torch.sqrt(-2.0 * torch.exp(h) * sinh)


def guided_eps(eps, guidance, t, gamma, sde: SDEConfig) -> torch.Tensor:
    """models.subnet.guide_eps with the exportable sigma: eps - gamma sigma_t grad_x log p(y | x_t)."""
    return eps - (gamma * sigma_t(t, sde)).view(-1, 1, 1, 1) * guidance


class SingleBackboneGraph(nn.Module):
    """One classifier forward pass feeds the subnet's taps, the gradient taps and the guidance gradient.

    With gradient taps both cotangents (softmax for the taps, y - softmax for guidance) go back through the
    classifier: by default as two backward passes of B; batch_cotangents=True stacks them into one pass of 2B,
    which benchmarks/export_shipped.py measured slower in ONNX Runtime on CPU (results/export_shipped.md).
    Without taps only the guidance cotangent goes back.
    """

    def __init__(self, model: SingleBackbone, batch_cotangents: bool = False, adjoint_as_conv: bool = True):
        super().__init__()
        self.adjoint = ClassifierAdjoint(model.classifier, adjoint_as_conv)
        self.subnet = model.subnet
        self.sde = model.sde
        self.use_taps = model.subnet.cfg.use_gradient_taps
        self.batch_cotangents = batch_cotangents

    def forward(self, x, t, y, gamma):
        logits, taps, saved = self.adjoint.forward_saved(x, t)
        guide_cot = guidance_cotangent(logits, y)
        tap_grads = None
        if self.use_taps and self.batch_cotangents:
            cot = torch.cat([torch.softmax(logits, dim=1), guide_cot])  # [2B, K]
            grads, gx = self.adjoint.backward(saved, cot, n=2)
            tap_grads = [split_copies(g, 2)[0] for g in grads]  # first B: d lse / d h_k
            guidance = split_copies(gx, 2)[1]  # last B: d log p(y|x) / dx
        else:
            if self.use_taps:
                tap_grads, _ = self.adjoint.backward(saved, torch.softmax(logits, dim=1), n=1)
            _, guidance = self.adjoint.backward(saved, guide_cot, n=1)
        eps = subnet_eps(self.subnet, taps, tap_grads, t, x, (torch.exp(log_alpha(t, self.sde)), sigma_t(t, self.sde)))
        return guided_eps(eps, guidance, t, gamma, self.sde), logits, guidance


class TwoModelGraph(nn.Module):
    """The baseline: a U-Net's eps, guided by a separate classifier's forward and backward pass."""

    def __init__(self, model: TwoModel, adjoint_as_conv: bool = True):
        super().__init__()
        self.unet = model.unet
        self.adjoint = ClassifierAdjoint(model.classifier, adjoint_as_conv)
        self.sde = model.sde

    def forward(self, x, t, y, gamma):
        logits, _, saved = self.adjoint.forward_saved(x, t)
        _, guidance = self.adjoint.backward(saved, guidance_cotangent(logits, y), n=1)
        eps = unet_eps(self.unet, x, t, (torch.exp(log_alpha(t, self.sde)), sigma_t(t, self.sde)))
        return guided_eps(eps, guidance, t, gamma, self.sde), logits, guidance


class StudentGraph(nn.Module):
    """A distilled student: one classifier forward pass feeds the subnet; no backward pass at all. The digit and the
    guidance scale are embedded, so eps is already guided; `guidance` is zero (there is no gradient to report)."""

    def __init__(self, model: Student):
        super().__init__()
        self.model, self.sde = model, model.sde

    def forward(self, x, t, y, gamma):
        raw, logits = self.model.raw_and_logits(x, t, y, gamma)
        cfg = self.model.subnet.cfg
        eps = eps_from_output("edm", raw, x, torch.exp(log_alpha(t, self.sde)), sigma_t(t, self.sde), cfg.data_mean, cfg.data_var)
        return eps, logits, torch.zeros_like(x)
