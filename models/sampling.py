"""Reference guided sampling in PyTorch: the runtime's own sampler code, driven by the torch model.

The exported graph and the on-device runtime must match this.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def reference_sample(
    model: nn.Module,
    sde: SDEConfig,
    seeds: Sequence[int],
    digits: Sequence[int] | None = None,
    gamma: float = 3.0,
    steps: int = 100,
    shape=(1, 80, 88),
    device="cpu",
    sampler: str = "em",
) -> np.ndarray:
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


def load_sampling_model(checkpoint: str, classifier_path: str | None = None, conditional: bool = True):
    """(model, SDE, Mel front end) of a checkpoint for `reference_sample`: a subnet checkpoint's single-backbone
    model, or a U-Net (guided by `classifier_path`'s classifier when given; a U-Net alone samples only
    unconditionally). ValueError otherwise."""
    from c2d.models.checkpoint import build_classifier, build_single_backbone, build_unet, load_checkpoint, mel_from, sde_from
    from c2d.models.unet import TwoModel

    ckpt = load_checkpoint(checkpoint)
    if ckpt["kind"] == "subnet":
        return build_single_backbone(ckpt, checkpoint), sde_from(ckpt), mel_from(ckpt)
    if ckpt["kind"] != "unet":
        raise ValueError(f"{checkpoint} is a {ckpt['kind']} checkpoint; sample from a subnet or unet checkpoint")
    if conditional and not classifier_path:
        raise ValueError("a U-Net needs --classifier to generate a given digit")
    unet = build_unet(ckpt, checkpoint)
    if not classifier_path:
        return unet, sde_from(ckpt), mel_from(ckpt)
    model = TwoModel(unet, build_classifier(load_checkpoint(classifier_path, "classifier")), sde_from(ckpt))
    return model, sde_from(ckpt), mel_from(ckpt)


def reference_log_mels(
    model: nn.Module,
    sde: SDEConfig,
    seed: int,
    count: int,
    digits: Sequence[int] | None,
    gamma: float,
    sampler: str | None = None,
    steps: int | None = None,
    device="cpu",
    mel=None,
) -> tuple[np.ndarray, str, int]:
    """(natural-log Mels [N, n_mels, T] on the runtime's scale, sampler, steps): what the device runtime's
    Generator hands its vocoder, so `c2d vocode` reads them as they are. Sample k uses seed + k."""
    from c2d.runtime.audio import DEFAULT_MEL, denormalize
    from c2d.runtime.limits import MAX_BATCH, REASONS
    from c2d.runtime.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, resolve_sampler

    n = len(digits) if digits else count
    if n > MAX_BATCH:  # the reference sampler runs every sample in one batch
        raise ValueError(f"{n} samples; the PyTorch reference sampler runs them in one batch: {REASONS['batch']}")
    sampler, steps = resolve_sampler(sampler, steps, DEFAULT_SAMPLER, DEFAULT_STEPS)
    x0 = reference_sample(model.to(device), sde, [seed + k for k in range(n)], digits, gamma, steps, device=device, sampler=sampler)
    return denormalize(x0[:, 0], mel or DEFAULT_MEL), sampler, steps
