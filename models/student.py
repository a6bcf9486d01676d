"""The few-step student (issue 30): the score subnet without gradient taps, told the digit and the guidance scale,
distilled from the guided teacher so that sampling needs no backward pass through the classifier.

Student: eps_S(x_t, t, y, gamma) = EDM-preconditioned output of a no-gradient-tap subnet on the frozen classifier's
forward taps, with embeddings of y and gamma added to the time embedding. It outputs eps like every generator here,
so the exported graph keeps the runtime's contract; its consistency function is the data prediction
f(x_t, t) = (x_t - sigma_t eps_S) / alpha_t.

Consistency distillation (Song et al. 2023; LCM's skipping steps, Luo et al. 2023), one training example:
  x_hi = alpha_hi x_0 + sigma_hi z at t_hi = ts[n + k]; the teacher's guided DDIM (probability-flow ODE) step takes it
  to x_lo at t_lo = ts[n]; the loss is the pseudo-Huber distance between f_S(x_hi, t_hi) and the target network's
  f(x_lo, t_lo) (no gradient), the target being the EMA of the student's weights.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from c2d.models.classifier import NoiseConditionedClassifier, freeze
from c2d.models.config import SubnetConfig
from c2d.models.nn import TimeEmbedding
from c2d.models.precond import eps_from_output
from c2d.models.sde import alpha_sigma
from c2d.models.subnet import ScoreSubnet, SingleBackbone
from c2d.runtime.sde import SDEConfig

GAMMA_SCALE = 1 / 10  # gamma enters the embedding as gamma / 10: the sinusoid's 1000 t covers gamma in [0, 10]


def student_config(teacher: SubnetConfig) -> SubnetConfig:
    """The teacher's subnet without gradient taps, with EDM output scaling on the teacher's data moments."""
    return dataclasses.replace(teacher, use_gradient_taps=False, gaussian_skip=False, output="edm")


class Condition(nn.Module):
    """Digit and guidance scale -> [B, time_dim], added to the time embedding. Zero at initialisation, so a student
    initialised from the teacher starts as the teacher's decoder."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        self.digit = nn.Linear(n_classes, dim, bias=False)  # one-hot y, as the graph's y input
        self.gamma = TimeEmbedding(dim)
        nn.init.zeros_(self.digit.weight)
        nn.init.zeros_(self.gamma.mlp[-1].weight)
        nn.init.zeros_(self.gamma.mlp[-1].bias)

    def forward(self, y_onehot: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        return self.digit(y_onehot.to(self.digit.weight.dtype)) + self.gamma(gamma * GAMMA_SCALE)


class Student(nn.Module):
    """Frozen classifier (forward taps only) + student subnet: eps(x_t, t, y, gamma) [B, 1, H, W]."""

    def __init__(self, classifier: NoiseConditionedClassifier, cfg: SubnetConfig, sde: SDEConfig, n_classes: int):
        super().__init__()
        if cfg.use_gradient_taps or cfg.output != "edm":
            raise ValueError("the student reads forward taps only and predicts eps with EDM output scaling")
        self.classifier = freeze(classifier)
        self.subnet = ScoreSubnet(cfg, classifier.tap_channels)
        self.condition = Condition(n_classes, cfg.time_dim)
        self.sde = sde

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, y_onehot: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the classifier is frozen and no gradient is taken through it: no backward pass
            _, taps = self.classifier.forward_with_taps(x, t)
        raw = self.subnet(taps, None, t, self.condition(y_onehot, gamma))
        cfg = self.subnet.cfg
        return eps_from_output("edm", raw, x, *alpha_sigma(t, self.sde), cfg.data_mean, cfg.data_var)


def init_from_teacher(student: Student, teacher: SingleBackbone) -> list[str]:
    """Copy every subnet weight whose name and shape the teacher shares (the decoder, the forward-tap projections,
    the time embedding); the gradient-tap fusions have no counterpart. Returns the names copied."""
    theirs = teacher.subnet.state_dict()
    mine = student.subnet.state_dict()
    copied = [k for k, v in mine.items() if k in theirs and theirs[k].shape == v.shape]
    student.subnet.load_state_dict({**mine, **{k: theirs[k] for k in copied}})
    return copied


def data_prediction(eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor, sde: SDEConfig) -> torch.Tensor:
    """x_0 = (x_t - sigma_t eps) / alpha_t, [B, 1, H, W]: the consistency function of an eps network."""
    alpha, sigma = alpha_sigma(t, sde)
    return (x - sigma.view(-1, 1, 1, 1) * eps) / alpha.view(-1, 1, 1, 1)


def ddim_step(eps: torch.Tensor, x: torch.Tensor, t_hi: torch.Tensor, t_lo: torch.Tensor, sde: SDEConfig) -> torch.Tensor:
    """One probability-flow (DDIM, eta 0) step from t_hi to t_lo [B] with the given eps."""
    x0 = data_prediction(eps, x, t_hi, sde)
    alpha_lo, sigma_lo = alpha_sigma(t_lo, sde)
    return alpha_lo.view(-1, 1, 1, 1) * x0 + sigma_lo.view(-1, 1, 1, 1) * eps


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float = 0.03) -> torch.Tensor:
    """Mean over the batch of mean_i (sqrt((a_i - b_i)^2 + c^2) - c): L2 near 0, L1 for outliers (iCT, Song 2023)."""
    d = (a.float() - b.float()).pow(2)
    return (torch.sqrt(d + c * c) - c).mean()
