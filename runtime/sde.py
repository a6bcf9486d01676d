"""VP SDE coefficients (Song et al. 2021) as plain arithmetic: works on floats and numpy arrays.

beta(t) = beta_min + t (beta_max - beta_min);  x_t = alpha_t x_0 + sigma_t eps,
log alpha_t = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2,  sigma_t^2 = 1 - alpha_t^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SDEConfig:
    beta_min: float = 0.1  # beta(t) at t = 0
    beta_max: float = 20.0  # beta(t) at t = 1
    t_min: float = 1e-3  # smallest diffusion time used in training and sampling


def beta(t, sde: SDEConfig):
    return sde.beta_min + t * (sde.beta_max - sde.beta_min)


def log_alpha(t, sde: SDEConfig):
    """log of the marginal mean coefficient; pure arithmetic, so it also works on torch tensors."""
    return -0.25 * t * t * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min


def alpha_sigma(t, sde: SDEConfig) -> tuple:
    """(alpha_t, sigma_t) for floats or numpy arrays."""
    la = log_alpha(np.asarray(t, dtype=np.float64), sde)
    return np.exp(la), np.sqrt(-np.expm1(2.0 * la))
