"""Output parameterisations of a noise-prediction network on the VP SDE (x_t = alpha x_0 + sigma eps).

Every network here is trained, exported and sampled as an eps predictor; what differs is how its raw output F
becomes eps:
- "eps": eps = F (DDPM). The error of F reaches the data prediction x_0 = (x_t - sigma eps) / alpha amplified by
  sigma / alpha, about 150 at t = 1: the probability-flow ODE breaks on it (docs/samplers.md).
- "gaussian-skip": eps = G + F, with G the eps of the Gaussian denoiser of the data (mean m, variance v). G is exact as
  t -> 1, so the response to the noise energy in x_t is right by construction; F is still amplified.
- "edm": eps = G + c_out F with c_out = alpha sqrt(v) / sqrt(alpha^2 v + sigma^2), and the loss weights the eps error
  by 1 / c_out^2, i.e. it is unit-weighted on F. This is EDM's c_skip / c_out (Karras et al. 2022) with sigma_data =
  sqrt(v), written for the VP SDE and centred on the data mean: with m = 0 and v = 1 it is v-prediction. The data
  prediction's error is c_out sigma / alpha |dF| = sigma sqrt(v) / sqrt(alpha^2 v + sigma^2) |dF| <= sqrt(v) |dF|:
  bounded at every noise level. At low noise c_out -> 1 and F is the eps prediction itself.
The frozen classifier still reads x_t as it was trained; only the output changes, so graphs, samplers and the
runtime stay as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from c2d.models.sde import alpha_sigma
from c2d.runtime.sde import SDEConfig

KINDS = ("eps", "gaussian-skip", "edm")
WEIGHTINGS = ("output", "eps")  # what the loss is uniform on: the network's raw output, or eps


def _bcast(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)  # [B] -> broadcast over [B, 1, H, W]


def gaussian_eps(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    """E[eps | x_t] if the data were i.i.d. N(mean, var) per value: sigma (x - alpha mean) / (alpha^2 var + sigma^2)."""
    alpha, sigma = _bcast(alpha), _bcast(sigma)
    return sigma * (x - alpha * mean) / (alpha * alpha * var + sigma * sigma)


def c_out(alpha: torch.Tensor, sigma: torch.Tensor, var: float) -> torch.Tensor:
    """EDM's output scale for eps, [B]: alpha sqrt(v) / sqrt(alpha^2 v + sigma^2)."""
    return alpha * var**0.5 / torch.sqrt(alpha * alpha * var + sigma * sigma)


def eps_from_output(kind: str, raw: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    """The network's raw output [B, 1, H, W] -> eps under the parameterisation `kind`; alpha, sigma [B]."""
    if kind == "eps":
        return raw
    skip = gaussian_eps(x, alpha, sigma, mean, var)
    if kind == "gaussian-skip":
        return skip + raw
    if kind == "edm":
        return skip + _bcast(c_out(alpha, sigma, var)) * raw
    raise ValueError(f"unknown output parameterisation {kind!r}; choose one of {', '.join(KINDS)}")


def edm_data_prediction(raw: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    """x_0 = (x_t - sigma eps) / alpha for eps = eps_from_output("edm", raw, ...), written without the division by
    alpha (about 0.007 at t = 1), so it is exact in float32 at every noise level:
    x_0 = (alpha v x + sigma^2 m) / (alpha^2 v + sigma^2) - sigma sqrt(v) / sqrt(alpha^2 v + sigma^2) raw."""
    alpha, sigma = _bcast(alpha), _bcast(sigma)
    norm = alpha * alpha * var + sigma * sigma
    return (alpha * var * x + sigma * sigma * mean) / norm - sigma * var**0.5 / torch.sqrt(norm) * raw


def loss_weight(kind: str, alpha: torch.Tensor, sigma: torch.Tensor, var: float, weighting: str = "output") -> torch.Tensor | None:
    """Per-example weight [B] of the squared eps error (None: uniform). With weighting "output", "edm" weights by
    1 / c_out^2, so the loss is unit-weighted on the raw output at every noise level. With weighting "eps" the eps
    error is uniform whatever the output, as for the eps network: low noise (fine detail) then counts as it does
    there, and the raw output's error at high noise counts by c_out^2, little."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    return c_out(alpha, sigma, var).pow(-2) if kind == "edm" and weighting == "output" else None


class Preconditioned(nn.Module):
    """Wraps any network net(x_t, t) -> raw output as an eps predictor under `kind` (used for the U-Net baseline;
    the score subnet applies the same eps_from_output after its classifier pass)."""

    def __init__(self, net: nn.Module, sde: SDEConfig, kind: str, mean: float = 0.0, var: float = 1.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown output parameterisation {kind!r}; choose one of {', '.join(KINDS)}")
        self.net, self.sde, self.kind, self.mean, self.var = net, sde, kind, mean, var

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = alpha_sigma(t, self.sde)
        return eps_from_output(self.kind, self.net(x, t), x, alpha, sigma, self.mean, self.var)
