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


def _dpm_std_error(steps: int, mu: float = 0.4, s: float = 0.3) -> tuple[float, float]:
    """(relative error of the std, absolute error of the mean) of DPM-Solver++(2M) on N(mu, s^2) data.

    The PF-ODE maps x_1 ~ N(a_1 mu, sd_1^2) affinely onto N(a_0 mu, sd_0^2): exact target per draw of x_T.
    """
    from c2d.runtime.samplers import SAMPLERS, logsnr_schedule

    x_T, _ = draw_noise(range(4000), 0, (8,))
    x0 = SAMPLERS["dpm2m"].fn(exact_gaussian_eps(mu, s), x_T, None, logsnr_schedule(steps, SDE), SDE)
    (a0, s0), (a1, s1) = alpha_sigma(SDE.t_min, SDE), alpha_sigma(1.0, SDE)
    sd0, sd1 = np.sqrt(a0**2 * s**2 + s0**2), np.sqrt(a1**2 * s**2 + s1**2)
    mean = a0 * mu + sd0 * (x_T.mean() - a1 * mu) / sd1
    return abs(x0.std() / x_T.std() / (sd0 / sd1) - 1), abs(x0.mean() - mean)


@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_2m_maps_noise_to_the_analytic_gaussian(steps):
    std_err, mean_err = _dpm_std_error(steps)
    assert std_err < 0.02 and mean_err < 2e-3


def test_dpm_solver_2m_converges_at_second_order():
    assert _dpm_std_error(50)[0] / _dpm_std_error(200)[0] > 8  # 4x the steps: 16x smaller error at order 2


def test_logsnr_schedule_is_uniform_in_log_snr_and_hits_the_ends():
    from c2d.runtime.samplers import log_snr, logsnr_schedule

    ts = logsnr_schedule(12, SDE)
    assert ts[0] == 1.0 and ts[-1] == SDE.t_min and np.all(np.diff(ts) < 0)
    np.testing.assert_allclose(np.diff(log_snr(ts, SDE)), np.diff(log_snr(ts, SDE))[0], rtol=1e-6)


def test_every_registered_sampler_runs_on_numpy_and_torch_alike():
    from c2d.runtime.samplers import SAMPLERS, SCHEDULES

    for name, spec in SAMPLERS.items():
        ts = SCHEDULES[spec.default_schedule](6, SDE)
        x_T, noise = draw_noise([1, 2], 6, (1, 3, 3))
        eps = exact_gaussian_eps(0.1, 0.5)
        a = spec.fn(eps, x_T, noise, ts, SDE)
        b = spec.fn(eps, torch.from_numpy(x_T).double(), torch.from_numpy(noise).double(), ts, SDE)
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-5, atol=1e-6, err_msg=name)


def _marginal_std_error(name: str, steps: int, mu: float = 0.4, s: float = 0.3, n: int = 2000) -> tuple[float, float]:
    """(relative error of the std, absolute error of the mean) of a stochastic sampler's samples at t_min, with the
    exact noise prediction of N(mu, s^2) data: the marginal there is N(alpha mu, alpha^2 s^2 + sigma^2).
    80,000 values: Monte Carlo error about 0.25 % on the std, 1e-3 on the mean."""
    from c2d.runtime.samplers import SAMPLERS, SCHEDULES

    spec = SAMPLERS[name]
    x_T, noise = draw_noise(range(n), steps, (40,))
    x0 = spec.fn(exact_gaussian_eps(mu, s), x_T, noise, SCHEDULES[spec.default_schedule](steps, SDE), SDE)
    alpha, sigma = alpha_sigma(SDE.t_min, SDE)
    return abs(x0.std() / np.sqrt(alpha**2 * s**2 + sigma**2) - 1), abs(x0.mean() - alpha * mu)


def test_ancestral_sampling_converges_to_the_analytic_gaussian_at_first_order():
    # the DDPM posterior with x0 = E[x0 | x_s] drops Var(x0 | x_s): too narrow at few steps, converging as 1/steps
    err_50, mean_50 = _marginal_std_error("ancestral", 50)
    err_200, mean_200 = _marginal_std_error("ancestral", 200)
    assert mean_50 < 5e-3 and mean_200 < 5e-3
    assert err_200 < 0.035
    assert 2.5 < err_50 / err_200 < 5.5  # 4x the steps: about 4x smaller error


@pytest.mark.parametrize(
    "name, steps, budget", [("dpm2m-sde", 50, 0.025), ("dpm2m-sde", 100, 0.01), ("dpm3m-sde", 25, 0.025), ("dpm3m-sde", 100, 0.01)]
)
def test_sde_dpm_solvers_reproduce_the_analytic_gaussian(name, steps, budget):
    std_err, mean_err = _marginal_std_error(name, steps)
    assert std_err < budget and mean_err < 5e-3


def test_sde_dpm_solver_2m_is_higher_order_than_ancestral_sampling():
    assert _marginal_std_error("dpm2m-sde", 50)[0] < _marginal_std_error("ancestral", 50)[0] / 3


def test_ddim_eta0_is_the_deterministic_probability_flow_and_converges():
    from c2d.runtime.samplers import SAMPLERS, logsnr_schedule

    mu, s = 0.4, 0.3
    x_T, _ = draw_noise(range(4000), 0, (8,))
    (a0, s0), (a1, s1) = alpha_sigma(SDE.t_min, SDE), alpha_sigma(1.0, SDE)
    sd0, sd1 = np.sqrt(a0**2 * s**2 + s0**2), np.sqrt(a1**2 * s**2 + s1**2)
    exact = a0 * mu + sd0 * (x_T - a1 * mu) / sd1  # the PF-ODE's affine map, per draw

    def worst(steps):
        return np.abs(SAMPLERS["ddim"].fn(exact_gaussian_eps(mu, s), x_T, None, logsnr_schedule(steps, SDE), SDE) - exact).max()

    assert worst(200) < 0.02 and worst(50) / worst(200) > 3


def test_ancestral_steps_with_zero_noise_equal_ddim():
    """eta scales only the injected noise: with the noise zeroed, ancestral sampling and DDIM differ only in how
    much of eps they keep, so they must differ, and ancestral with eta 0 must equal ddim exactly."""
    from functools import partial

    from c2d.runtime.samplers import SAMPLERS, ddim, logsnr_schedule

    x_T, noise = draw_noise([5, 6], 10, (1, 3, 3))
    eps = exact_gaussian_eps(0.1, 0.5)
    ts = logsnr_schedule(10, SDE)
    np.testing.assert_array_equal(partial(ddim, eta=0.0)(eps, x_T, noise, ts, SDE), SAMPLERS["ddim"].fn(eps, x_T, None, ts, SDE))
    assert np.abs(SAMPLERS["ancestral"].fn(eps, x_T, np.zeros_like(noise), ts, SDE) - SAMPLERS["ddim"].fn(eps, x_T, None, ts, SDE)).max() > 1e-3


def exact_gaussian_consistency_eps(mu: float, s: float):
    """The eps of an exact consistency function for data ~ N(mu, s^2): the probability-flow ODE maps x_t to
    f = mu + s (x_t - alpha mu) / sqrt(alpha^2 s^2 + sigma^2), and eps = (x_t - alpha f) / sigma."""

    def eps(x, t):
        alpha, sigma = alpha_sigma(t, SDE)
        f = mu + s * (x - float(alpha) * mu) / float(np.sqrt(alpha**2 * s**2 + sigma**2))
        return (x - float(alpha) * f) * (1.0 / float(sigma))

    return eps


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_sampling_with_an_exact_consistency_function_lands_on_the_data(steps):
    """Every step re-noises an exact data sample to the right marginal, so 1, 2 or 4 steps give N(mu, s^2) at t_min
    (alpha there is 1 - 5e-5); x_T ~ N(0, 1) misses the t = 1 marginal N(alpha mu, alpha^2 s^2 + sigma^2) only by
    alpha(1) = 0.0066, well inside these tolerances. The posterior-mean eps (a teacher's) would shrink the spread."""
    from c2d.runtime.samplers import SAMPLERS, logsnr_schedule

    mu, s, n = 0.4, 0.3, 2000
    x_T, noise = draw_noise(range(n), steps, (40,))
    ts = logsnr_schedule(steps, SDE)
    x0 = SAMPLERS["consistency"].fn(exact_gaussian_consistency_eps(mu, s), x_T, noise, ts, SDE)
    assert x0.mean() == pytest.approx(mu, abs=0.005) and x0.std() == pytest.approx(s, rel=0.01)
    teacher = SAMPLERS["consistency"].fn(exact_gaussian_eps(mu, s), x_T, noise, ts, SDE)
    assert teacher.std() < 0.9 * s  # a posterior mean is not a sample
