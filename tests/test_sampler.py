import numpy as np
import pytest
import torch

from c2d.runtime.samplers import draw_noise, euler_maruyama, linear_schedule
from c2d.runtime.sde import SDEConfig, alpha_sigma

SDE = SDEConfig()


def exact_gaussian_eps(mu: float, s: float):
    """Exact noise prediction for data ~ N(mu, s^2): x_t ~ N(alpha mu, alpha^2 s^2 + sigma^2)."""

    def eps(x, t):
        alpha, sigma = alpha_sigma(t, SDE)
        var = alpha**2 * s**2 + sigma**2
        return float(sigma) * (x - alpha * mu) / float(var)  # eps = -sigma * score

    return eps


def test_em_100_steps_reproduces_an_analytic_gaussian():
    mu, s = 0.4, 0.3
    n = 4000
    x_T, noise = draw_noise(range(n), 100, (8,))
    x0 = euler_maruyama(exact_gaussian_eps(mu, s), x_T, noise, linear_schedule(100, SDE.t_min), SDE)
    alpha, sigma = alpha_sigma(SDE.t_min, SDE)
    target_mean, target_std = alpha * mu, np.sqrt(alpha**2 * s**2 + sigma**2)
    # sampling error of 32,000 values is ~0.002 (mean) and ~0.4 % (std); the rest is discretisation error
    assert x0.mean() == pytest.approx(target_mean, abs=0.01)
    assert x0.std() == pytest.approx(target_std, rel=0.03)


def test_sampler_runs_identically_on_numpy_and_torch():
    x_T, noise = draw_noise([3, 4], 10, (1, 4, 4))
    eps = exact_gaussian_eps(0.1, 0.5)
    ts = linear_schedule(10, SDE.t_min)
    out_np = euler_maruyama(eps, x_T, noise, ts, SDE)
    out_t = euler_maruyama(eps, torch.from_numpy(x_T).double(), torch.from_numpy(noise).double(), ts, SDE)
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-5, atol=1e-6)


def test_noise_is_per_sample_and_independent_of_batch():
    a_T, a_noise = draw_noise([7, 8], 5, (1, 2, 2))
    b_T, b_noise = draw_noise([8], 5, (1, 2, 2))
    np.testing.assert_array_equal(a_T[1], b_T[0])
    np.testing.assert_array_equal(a_noise[:, 1], b_noise[:, 0])


def test_schedule_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps"):
        linear_schedule(0, 1e-3)
