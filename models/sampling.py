"""Reference guided sampling in PyTorch: the runtime's own sampler code, driven by the torch model.

The exported graph and the on-device runtime must match this.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from c2d.runtime.samplers import SAMPLERS, SCHEDULES, draw_noise_per_step
from c2d.runtime.sde import SDEConfig

N_CLASSES = 10


def make_eps_fn(model: nn.Module, digits: Sequence[int] | None, gamma: float, device):
    """(x, t) -> eps for a model with `forward(x, t)` and `guided(x, t, y_onehot, gamma)` (guidance wraps the model)."""
    if gamma < 0:
        raise ValueError(f"guidance scale must be >= 0, got {gamma}")
    y = None if digits is None else torch.eye(N_CLASSES, device=device)[torch.as_tensor(list(digits), device=device)]

    def eps_fn(x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, device=device, dtype=torch.float32)
        with torch.no_grad():
            if y is None:
                return model(x, tt)
            return model.guided(x, tt, y, torch.full_like(tt, gamma))[0]

    return eps_fn


def reference_sample(model: nn.Module, sde: SDEConfig, seeds: Sequence[int], digits: Sequence[int] | None = None,
                     gamma: float = 3.0, steps: int = 100, shape=(1, 80, 88), device="cpu", sampler: str = "em") -> np.ndarray:
    """A registered sampler (default: reverse VP SDE, Euler-Maruyama) for `steps` steps with its default schedule;
    digits=None is unconditional. Returns x_0 [B, *shape]."""
    if digits is not None and len(digits) != len(seeds):
        raise ValueError(f"{len(digits)} digits for {len(seeds)} seeds")
    model.eval()
    spec = SAMPLERS[sampler]
    x_T, noise = draw_noise_per_step(seeds, steps if spec.stochastic else 0, shape, lambda z: torch.from_numpy(z).to(device))
    x = spec.fn(
        make_eps_fn(model, digits, gamma, device),
        torch.from_numpy(x_T).to(device),
        noise,
        SCHEDULES[spec.default_schedule](steps, sde),
        sde,
    )
    return x.detach().cpu().numpy()
