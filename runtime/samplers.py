"""Samplers as small pure functions over a noise-prediction callable (k-diffusion style).

They use only arithmetic with Python floats on x, so the same code runs on numpy arrays (the on-device
runtime) and on torch tensors (the PyTorch reference): parity by construction. Noise comes from the host,
drawn per sample from its own seed, so a sample does not depend on what else is in the batch.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from c2d.runtime.sde import SDEConfig, alpha_sigma, beta

EpsFn = Callable[[object, float], object]  # (x_t [B, ...], t) -> predicted (guided) noise, same shape


def linear_schedule(steps: int, t_min: float) -> np.ndarray:
    """Diffusion times from 1 down to t_min, steps + 1 points (the paper's EM grid)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return np.linspace(1.0, t_min, steps + 1)


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


SAMPLERS = {"em": euler_maruyama}
