"""VP SDE in torch for training: marginals and the denoising score matching (noise prediction) loss."""

from __future__ import annotations

import torch

from c2d.runtime.sde import SDEConfig, log_alpha


def alpha_sigma(t: torch.Tensor, sde: SDEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) for a tensor of times [B]."""
    la = log_alpha(t, sde)
    return torch.exp(la), torch.sqrt(-torch.expm1(2.0 * la))


def sample_t(batch: int, sde: SDEConfig, generator=None, device=None) -> torch.Tensor:
    """t ~ U[t_min, 1], [B]."""
    return sde.t_min + (1.0 - sde.t_min) * torch.rand(batch, generator=generator, device=device)


def perturb(x0: torch.Tensor, t: torch.Tensor, sde: SDEConfig, noise: torch.Tensor) -> torch.Tensor:
    """x_t = alpha_t x_0 + sigma_t eps."""
    alpha, sigma = alpha_sigma(t, sde)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    return alpha.view(shape) * x0 + sigma.view(shape) * noise


def dsm_loss(eps_pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """DSM with sigma_t^2 weighting: E || sigma_t s(x_t, t) + eps ||^2 = E || eps_pred - eps ||^2."""
    return (eps_pred.float() - noise).pow(2).mean()
