"""Samplers as small pure functions over a noise-prediction callable (k-diffusion style).

They use only arithmetic with Python floats on x, so the same code runs on numpy arrays (the on-device
runtime) and on torch tensors (the PyTorch reference): parity by construction. Noise comes from the host,
drawn per sample from its own seed, so a sample does not depend on what else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from c2d.runtime.sde import SDEConfig, alpha_sigma, beta

EpsFn = Callable[[Any, float], Any]  # (x_t [B, ...], t) -> predicted (guided) noise, same shape


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


class StepNoise:
    """Per-step noise drawn when a sampler asks for step i (steps in order), not all at once: memory stays one step's
    [B, *shape] whatever the step count. Same numbers as draw_noise: each sample's generator is consumed in the same
    order (x_T first, then step 0, 1, ...). `convert` maps each step's array (e.g. to a torch tensor)."""

    def __init__(self, rngs: list[np.random.Generator], steps: int, shape: tuple[int, ...], convert: Callable | None = None):
        self.rngs, self.steps, self.shape, self.convert = rngs, steps, shape, convert
        self.next: int = 0
        self.current: Any = None

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int):
        if i == self.next - 1 and self.current is not None:
            return self.current
        if i != self.next or not 0 <= i < self.steps:
            raise IndexError(f"step noise is drawn in order: asked for step {i}, next is {self.next} of {self.steps}")
        step = np.stack([rng.standard_normal(self.shape, dtype=np.float32) for rng in self.rngs])
        self.current, self.next = (self.convert(step) if self.convert else step), i + 1
        return self.current


def draw_noise_per_step(seeds: Sequence[int], steps: int, shape: tuple[int, ...], convert: Callable | None = None) -> tuple[np.ndarray, StepNoise]:
    """x_T [B, *shape] now, and the per-step noise as a StepNoise drawn step by step (same values as draw_noise)."""
    rngs = [np.random.default_rng(seed) for seed in seeds]
    x_T = np.stack([rng.standard_normal(shape, dtype=np.float32) for rng in rngs])
    return x_T, StepNoise(rngs, steps, shape, convert)


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


def _data_prediction(eps_fn: EpsFn, x, s: float, sde: SDEConfig):
    """x0 = (x - sigma_s eps) / alpha_s from the noise prediction at time s."""
    alpha_s, sigma_s = alpha_sigma(s, sde)
    return (x - float(sigma_s) * eps_fn(x, s)) * (1.0 / float(alpha_s))


def dpm_solver_pp_2m(eps_fn: EpsFn, x_T, noise, ts: np.ndarray, sde: SDEConfig, callback=None):
    """Probability-flow ODE, DPM-Solver++(2M) (Lu et al. 2022) in data prediction; deterministic (noise unused).

    x0_i = (x - sigma_s eps) / alpha_s;  D = x0_i, or (1 + 1/2r) x0_i - (1/2r) x0_{i-1} with r = h_{i-1} / h_i;
    x <- (sigma_t / sigma_s) x - alpha_t (e^-h - 1) D,  h = lambda_t - lambda_s. First order on the first and
    last step (lower-order final step, more stable at few steps).
    """
    x, prev_x0, prev_h = x_T, None, 0.0
    steps = len(ts) - 1
    for i in range(steps):
        s, t = float(ts[i]), float(ts[i + 1])
        (_, sigma_s), (alpha_t, sigma_t) = alpha_sigma(s, sde), alpha_sigma(t, sde)
        h = float(log_snr(t, sde) - log_snr(s, sde))
        x0 = _data_prediction(eps_fn, x, s, sde)
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


def ddim(eps_fn: EpsFn, x_T, noise, ts: np.ndarray, sde: SDEConfig, callback=None, eta: float | Callable[[float], float] = 1.0):
    """DDIM (Song et al. 2021) with stochasticity eta: eta = 1 samples the DDPM posterior q(x_t | x_s, x0)
    (ancestral sampling), eta = 0 is the deterministic probability-flow discretisation. eta may be a function of
    the step's start time s (benchmarks/ode_diagnosis.py switches between the two along the trajectory).

    x_t = alpha_t x0 + sqrt(sigma_t^2 - c^2) eps + c z,  c = eta sigma_t sqrt(1 - e^-2h),  h = lambda_t - lambda_s.
    The last step adds no noise. noise: [steps, B, ...] (unused when eta = 0).
    """
    x = x_T
    steps = len(ts) - 1
    for i in range(steps):
        s, t = float(ts[i]), float(ts[i + 1])
        (alpha_s, sigma_s), (alpha_t, sigma_t) = alpha_sigma(s, sde), alpha_sigma(t, sde)
        eps = eps_fn(x, s)
        x0 = (x - float(sigma_s) * eps) * (1.0 / float(alpha_s))
        h = float(log_snr(t, sde) - log_snr(s, sde))
        e = eta(s) if callable(eta) else eta
        c = e * float(sigma_t) * math.sqrt(-math.expm1(-2.0 * h)) if i < steps - 1 else 0.0
        x = float(alpha_t) * x0 + math.sqrt(max(float(sigma_t) ** 2 - c * c, 0.0)) * eps
        if c > 0.0:
            x = x + c * noise[i]
        if callback is not None:
            callback(i, x)
    return x


def consistency(eps_fn: EpsFn, x_T, noise, ts: np.ndarray, sde: SDEConfig, callback=None):
    """Multistep consistency sampling (Song et al. 2023) for a distilled student, whose data prediction
    x0 = (x - sigma_s eps) / alpha_s is its estimate of where the probability-flow ODE through x ends: at each step
    x0 is formed, then noised afresh to the next time, x_t = alpha_t x0 + sigma_t z; the last step adds no noise.
    With an exact consistency function every step lands on the data distribution. noise: [steps, B, ...].
    """
    x = x_T
    steps = len(ts) - 1
    for i in range(steps):
        s, t = float(ts[i]), float(ts[i + 1])
        alpha_t, sigma_t = alpha_sigma(t, sde)
        x0 = _data_prediction(eps_fn, x, s, sde)
        x = float(alpha_t) * x0 + (float(sigma_t) * noise[i] if i < steps - 1 else 0.0)
        if callback is not None:
            callback(i, x)
    return x


def _sde_phis(h: float) -> tuple[float, float, float]:
    """I_k = int_0^h 2 e^{-2(h-u)} u^k / k! du for k = 0, 1, 2: the weights of x0 and its first two log-SNR
    derivatives in the exact solution of the reverse VP SDE's linear part (by parts: I_k = h^k / k! - I_{k-1} / 2)."""
    i0 = -math.expm1(-2.0 * h)
    i1 = h - 0.5 * i0
    return i0, i1, 0.5 * h * h - 0.5 * i1


def dpm_solver_pp_sde(eps_fn: EpsFn, x_T, noise, ts: np.ndarray, sde: SDEConfig, callback=None, order: int = 2):
    """SDE-DPM-Solver++ (Lu et al. 2022) multistep, order 2 (2M) or 3 (3M): the reverse SDE with its linear part
    solved exactly and the data prediction x0(lambda) extrapolated from the last `order` steps (Newton form):

    x_t = (sigma_t / sigma_s) e^-h x + alpha_t (I_0 x0 + I_1 x0' + I_2 x0'') + sigma_t sqrt(1 - e^-2h) z,
    x0' = d1 + h1 d2, x0'' = 2 d2 from the divided differences d1, d2 over the last three log-SNR points.
    Lower order on the first steps (first order is ancestral sampling); the last step adds no noise.
    """
    x0s: list[Any] = []  # the last data predictions
    hs: list[float] = []  # and the log-SNR steps between them
    x = x_T
    steps = len(ts) - 1
    for i in range(steps):
        s, t = float(ts[i]), float(ts[i + 1])
        (_, sigma_s), (alpha_t, sigma_t) = alpha_sigma(s, sde), alpha_sigma(t, sde)
        h = float(log_snr(t, sde) - log_snr(s, sde))
        x0 = _data_prediction(eps_fn, x, s, sde)
        i0, i1, i2 = _sde_phis(h)
        update = i0 * x0
        if order >= 2 and len(x0s) >= 1:
            d1 = (x0 - x0s[-1]) * (1.0 / hs[-1])
            if order >= 3 and len(x0s) >= 2:
                d2 = (d1 - (x0s[-1] - x0s[-2]) * (1.0 / hs[-2])) * (1.0 / (hs[-1] + hs[-2]))
                update = update + i1 * (d1 + hs[-1] * d2) + (2.0 * i2) * d2
            else:
                update = update + i1 * d1
        x = float(sigma_t / sigma_s) * math.exp(-h) * x + float(alpha_t) * update
        if i < steps - 1:
            x = x + float(sigma_t) * math.sqrt(i0) * noise[i]
        x0s, hs = (x0s + [x0])[-2:], (hs + [h])[-2:]
        if callback is not None:
            callback(i, x)
    return x


@dataclass(frozen=True)
class SamplerSpec:
    fn: Callable  # (eps_fn, x_T, noise, ts, sde, callback) -> x at t_min
    stochastic: bool  # needs per-step noise from the host
    default_steps: int
    default_schedule: str  # key of SCHEDULES
    summary: str  # one line for --help


ODE_WARNING = (
    "the probability-flow ODE turns noise into noisy or blurred digits with a generator trained with --precond eps, "
    "as the shipped one is (docs/samplers.md)"
)
ODE_NOTE = "warns on a generator trained with --precond eps"
SAMPLERS = {
    "em": SamplerSpec(euler_maruyama, True, 100, "linear", "reverse SDE, Euler-Maruyama (the paper's sampler)"),
    "ancestral": SamplerSpec(partial(ddim, eta=1.0), True, 25, "logsnr", "DDPM posterior steps (DDIM, eta 1)"),
    "dpm2m-sde": SamplerSpec(partial(dpm_solver_pp_sde, order=2), True, 25, "logsnr", "SDE-DPM-Solver++(2M)"),
    "dpm3m-sde": SamplerSpec(partial(dpm_solver_pp_sde, order=3), True, 25, "logsnr", "SDE-DPM-Solver++(3M)"),
    "ddim": SamplerSpec(partial(ddim, eta=0.0), False, 50, "logsnr", f"DDIM, eta 0: probability-flow ODE ({ODE_NOTE})"),
    "dpm2m": SamplerSpec(dpm_solver_pp_2m, False, 20, "logsnr", f"DPM-Solver++(2M): probability-flow ODE ({ODE_NOTE})"),
    "consistency": SamplerSpec(consistency, True, 4, "logsnr", "multistep consistency sampling: for a distilled student (c2d train student)"),
}


# What `c2d export` writes into a bundle as its default sampler, chosen on the audio by benchmarks/default_choice.py
# (docs/samplers.md): ancestral 25 is what independent listeners rated at or above the paper's EM-100 on every measure;
# 8 steps were heard worse, and 10-20 steps are not resolved from 25 at 300 clips.
DEFAULT_SAMPLER, DEFAULT_STEPS = "ancestral", 25


def ode_warning(sampler: str, gaussian_skip: bool) -> str | None:
    """The warning for a deterministic (ODE) sampler on a generator whose eps ignores the noise energy of x_t."""
    return None if SAMPLERS[sampler].stochastic or gaussian_skip else f"{sampler}: {ODE_WARNING}"


def resolve_sampler(sampler: str | None, steps: int | None, default_sampler: str, default_steps: int) -> tuple[str, int]:
    """(sampler, steps) of a run: what was asked for, else the bundle's defaults. Steps left open take the bundle's
    default_steps when the sampler is the bundle's, else the sampler's own default."""
    name = default_sampler if sampler is None else sampler
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if steps is None:
        steps = default_steps if name == default_sampler else SAMPLERS[name].default_steps
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return name, steps
