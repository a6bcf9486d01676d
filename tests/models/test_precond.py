"""Output parameterisations (models/precond.py): the EDM one bounds how much of the network's error reaches the
data prediction, is exact where the Gaussian skip is, and its loss is unit-weighted on the raw output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c2d.models.precond import Preconditioned, c_out, eps_from_output, gaussian_eps, loss_weight
from c2d.models.sde import alpha_sigma, perturb
from c2d.models.train import score_loss
from c2d.runtime.sde import SDEConfig

SDE = SDEConfig()
MEAN, VAR = -0.6, 0.15
T = torch.tensor([SDE.t_min, 0.05, 0.2, 0.5, 0.8, 1.0])


def data_error_per_unit_output_error(kind: str) -> torch.Tensor:
    """|d x0_hat / d raw| at each t: x0_hat = (x - sigma eps) / alpha, eps linear in the raw output."""
    alpha, sigma = alpha_sigma(T, SDE)
    x = torch.zeros(len(T), 1, 1, 1)
    zero = eps_from_output(kind, torch.zeros_like(x), x, alpha, sigma, MEAN, VAR)
    unit = eps_from_output(kind, torch.ones_like(x), x, alpha, sigma, MEAN, VAR)
    return ((unit - zero).view(-1) * sigma / alpha).abs()


def test_edm_bounds_the_data_error_where_eps_amplifies_it():
    eps_gain, edm_gain = data_error_per_unit_output_error("eps"), data_error_per_unit_output_error("edm")
    assert eps_gain[-1] > 100  # sigma / alpha at t = 1
    assert torch.all(edm_gain <= VAR**0.5 + 1e-6)
    skip_gain = data_error_per_unit_output_error("gaussian-skip")
    torch.testing.assert_close(skip_gain, eps_gain, rtol=1e-5, atol=0)  # the skip alone does not bound it (rounding differs by CPU)


def test_edm_is_the_gaussian_denoiser_at_high_noise_and_eps_prediction_at_low_noise():
    alpha, sigma = alpha_sigma(T, SDE)
    raw = torch.randn(len(T), 1, 4, 4)
    x = torch.randn(len(T), 1, 4, 4)
    eps = eps_from_output("edm", raw, x, alpha, sigma, MEAN, VAR)
    skip = gaussian_eps(x, alpha, sigma, MEAN, VAR)
    assert torch.allclose(eps[-1], skip[-1], atol=0.01)  # c_out ~ 0.0026 at t = 1
    assert torch.allclose(eps[0] - skip[0], raw[0], atol=1e-3)  # c_out ~ 1 at t_min: the raw output is the eps residual
    assert torch.allclose(c_out(alpha, sigma, 1.0) ** 2 + sigma**2 / (alpha**2 + sigma**2), torch.ones(len(T)))


def test_edm_loss_is_unit_weighted_on_the_raw_output():
    """The weighted eps loss equals the plain squared error of the raw output against its own target."""
    gen = torch.Generator().manual_seed(0)
    x0 = MEAN + VAR**0.5 * torch.randn(8, 1, 4, 4, generator=gen)
    raw = torch.randn(8, 1, 4, 4, generator=gen)

    class Fixed(torch.nn.Module):  # a network whose raw output is `raw`, whatever its input
        def forward(self, x, t):
            return raw

    model = Preconditioned(Fixed(), SDE, "edm", MEAN, VAR)
    loss = score_loss(SDE, "edm", VAR)(model, x0, None, torch.Generator().manual_seed(1))
    # the same draws of t and noise as score_loss makes
    g = torch.Generator().manual_seed(1)
    t = SDE.t_min + (1 - SDE.t_min) * torch.rand(8, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    alpha, sigma = alpha_sigma(t, SDE)
    target = (noise - gaussian_eps(perturb(x0, t, SDE, noise), alpha, sigma, MEAN, VAR)) / c_out(alpha, sigma, VAR).view(-1, 1, 1, 1)
    assert loss.item() == pytest.approx((raw - target).pow(2).mean().item(), rel=1e-4)
    assert loss_weight("eps", alpha, sigma, VAR) is None


def test_eps_weighting_makes_the_edm_loss_plain_eps_matching():
    """--loss-weighting eps: the same network output, the eps network's loss (uniform on the eps error)."""
    from c2d.models.sde import dsm_loss

    gen = torch.Generator().manual_seed(0)
    x0 = MEAN + VAR**0.5 * torch.randn(8, 1, 4, 4, generator=gen)
    raw = torch.randn(8, 1, 4, 4, generator=gen)

    class Fixed(torch.nn.Module):
        def forward(self, x, t):
            return raw

    model = Preconditioned(Fixed(), SDE, "edm", MEAN, VAR)
    loss = score_loss(SDE, "edm", VAR, "eps")(model, x0, None, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    t = SDE.t_min + (1 - SDE.t_min) * torch.rand(8, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    eps = model(perturb(x0, t, SDE, noise), t)
    assert loss.item() == pytest.approx(dsm_loss(eps, noise).item(), rel=1e-5)
    unit = score_loss(SDE, "edm", VAR)(model, x0, None, torch.Generator().manual_seed(1))
    assert unit.item() > 2 * loss.item()  # the default weighting (1 / c_out^2) differs: it is not a no-op
    with pytest.raises(ValueError, match="unknown loss weighting 'x0'"):
        loss_weight("edm", t, t, VAR, "x0")


def test_unknown_parameterisation_is_refused():
    with pytest.raises(ValueError, match="unknown output parameterisation"):
        Preconditioned(torch.nn.Identity(), SDE, "x0")
    with pytest.raises(ValueError, match="unknown output parameterisation"):
        eps_from_output("v", torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.ones(1), torch.ones(1), 0.0, 1.0)


def test_exact_gaussian_data_needs_no_residual():
    """For N(MEAN, VAR) data the exact eps is the skip term: raw output 0 is optimal under every parameterisation."""
    alpha, sigma = alpha_sigma(T, SDE)
    rng = np.random.default_rng(0)
    x0 = torch.from_numpy(MEAN + VAR**0.5 * rng.standard_normal((len(T), 20000))).float()
    noise = torch.from_numpy(rng.standard_normal((len(T), 20000))).float()
    x = alpha[:, None] * x0 + sigma[:, None] * noise
    for kind in ("gaussian-skip", "edm"):
        eps = eps_from_output(kind, torch.zeros(len(T), 1, 1, 20000), x.view(len(T), 1, 1, -1), alpha, sigma, MEAN, VAR).view(len(T), -1)
        # E[noise | x] is linear for Gaussian data: the residual noise - eps is uncorrelated with x
        resid = noise - eps
        corr = ((resid - resid.mean(1, keepdim=True)) * (x - x.mean(1, keepdim=True))).mean(1)
        assert torch.all(corr.abs() < 0.03), (kind, corr)
