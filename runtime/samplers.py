"""Samplers as small pure functions over a noise-prediction callable (k-diffusion style).

They use only arithmetic with Python floats on x, so the same code runs on numpy arrays (the on-device
runtime) and on torch tensors (the PyTorch reference): parity by construction. Noise comes from the host,
drawn per sample from its own seed, so a sample does not depend on what else is in the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from c2d.runtime.sde import SDEConfig, alpha_sigma, beta

EpsFn = Callable[[object, float], object]  # (x_t [B, ...], t) -> predicted (guided) noise, same shape


def linear_schedule(steps: int, t_min: float) -> np.ndarray:
    """Diffusion times from 1 down to t_min, steps + 1 points (the paper's EM grid)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return np.linspace(1.0, t_min, steps + 1)


def log_snr(t, sde: SDEConfig):
    """lambda_t = log(alpha_t / sigma_t)."""
    alpha, sigma = alpha_sigma(t, sde)
    return np.log(alpha) - np.log(sigma)


def t_of_log_snr(lam, sde: SDEConfig):
    """Inverse of log_snr: log alpha = -softplus(-2 lambda) / 2, then the VP quadratic in t."""
    log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * np.asarray(lam, dtype=np.float64))
    d, b0 = sde.beta_max - sde.beta_min, sde.beta_min
    return (-0.5 * b0 + np.sqrt(0.25 * b0 * b0 - d * log_alpha)) / (0.5 * d)


def logsnr_schedule(steps: int, sde: SDEConfig) -> np.ndarray:
    """Times from 1 down to t_min, uniform in log-SNR (DPM-Solver's choice), steps + 1 points."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    lams = np.linspace(log_snr(1.0, sde), log_snr(sde.t_min, sde), steps + 1)
    ts = t_of_log_snr(lams, sde)
    ts[0], ts[-1] = 1.0, sde.t_min  # exact ends
    return ts


SCHEDULES = {"linear": lambda steps, sde: linear_schedule(steps, sde.t_min), "logsnr": logsnr_schedule}


def draw_noise(seeds: Sequence[int], steps: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample seeded noise: x_T [B, *shape] and per-step noise [steps, B, *shape], float32."""
    x_T, steps_noise = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x_T.append(rng.standard_normal(shape, dtype=np.float32))
        steps_noise.append(rng.standard_normal((steps, *shape), dtype=np.float32))
    return np.stack(x_T), np.stack(steps_noise, axis=1)


def euler_maruyama(eps_fn: EpsFn, x_T, noise, ts: np.ndarray, sde: SDEConfig, callback=None):
    """Reverse VP SDE, Euler-Maruyama: x <- x + [beta/2 x + beta score] dt + sqrt(beta dt) z.

    score = -eps / sigma_t. The last step adds no noise (it returns the mean). noise: [steps, B, ...].
    """
    x = x_T
    steps = len(ts) - 1
    for i in range(steps):
        t, dt = float(ts[i]), float(ts[i] - ts[i + 1])
        b = float(beta(t, sde))
        _, sigma = alpha_sigma(t, sde)
        eps = eps_fn(x, t)
        x = x + (0.5 * b * x - (b / float(sigma)) * eps) * dt
        if i < steps - 1:
            x = x + math.sqrt(b * dt) * noise[i]
        if callback is not None:
            callback(i, x)
    return x


def dpm_solver_pp_2m(eps_fn: EpsFn, x_T, noise, ts: np.ndarray, sde: SDEConfig, callback=None):
    """Probability-flow ODE, DPM-Solver++(2M) (Lu et al. 2022) in data prediction; deterministic (noise unused).

    x0_i = (x - sigma_s eps) / alpha_s;  D = x0_i, or (1 + 1/2r) x0_i - (1/2r) x0_{i-1} with r = h_{i-1} / h_i;
    x <- (sigma_t / sigma_s) x - alpha_t (e^-h - 1) D,  h = lambda_t - lambda_s. First order on the first and
    last step (lower-order final step, more stable at few steps).
    """
    x, prev_x0, prev_h = x_T, None, None
    steps = len(ts) - 1
    for i in range(steps):
        s, t = float(ts[i]), float(ts[i + 1])
        (alpha_s, sigma_s), (alpha_t, sigma_t) = alpha_sigma(s, sde), alpha_sigma(t, sde)
        h = float(log_snr(t, sde) - log_snr(s, sde))
        x0 = (x - float(sigma_s) * eps_fn(x, s)) * (1.0 / float(alpha_s))
        if prev_x0 is None or i == steps - 1:
            d = x0
        else:
            r = prev_h / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * prev_x0
        x = float(sigma_t / sigma_s) * x - float(alpha_t) * math.expm1(-h) * d
        prev_x0, prev_h = x0, h
        if callback is not None:
            callback(i, x)
    return x


@dataclass(frozen=True)
class SamplerSpec:
    fn: Callable  # (eps_fn, x_T, noise, ts, sde, callback) -> x at t_min
    stochastic: bool  # needs per-step noise from the host
    default_steps: int
    default_schedule: str  # key of SCHEDULES


SAMPLERS = {
    "em": SamplerSpec(euler_maruyama, True, 100, "linear"),  # the paper's sampler
    "dpm2m": SamplerSpec(dpm_solver_pp_2m, False, 20, "logsnr"),  # fast deterministic
}
