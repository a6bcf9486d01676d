"""The noise-conditioned classifier: the frozen backbone of the single-backbone generator."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from c2d.models.config import ClassifierConfig
from c2d.models.nn import Encoder, GroupNorm
from c2d.models.sde import perturb
from c2d.runtime.sde import SDEConfig

NOISY_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)  # diffusion times at which the classifier's accuracy is reported


class NoiseConditionedClassifier(nn.Module):
    """U-Net encoder + GN/SiLU/mean-pool/linear head: (x_t [B, 1, 80, 88], t [B]) -> logits [B, 10]."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder)
        c = self.encoder.tap_channels[-1]
        self.head_norm = GroupNorm(min(cfg.encoder.groups, c), c)
        self.head = nn.Linear(c, cfg.n_classes)

    @property
    def tap_channels(self) -> tuple[int, ...]:
        return self.encoder.tap_channels

    def forward_with_taps(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        taps, _ = self.encoder(x, t)
        pooled = F.silu(self.head_norm(taps[-1])).mean(dim=(2, 3))  # [B, C]
        return self.head(pooled), taps

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.forward_with_taps(x, t)[0]


def freeze(module: nn.Module) -> nn.Module:
    """Frozen for good: no gradients, eval mode (no dropout)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@torch.no_grad()
def noisy_accuracy(
    classifier: nn.Module, x0: torch.Tensor, y: torch.Tensor, sde: SDEConfig, times=NOISY_TIMES, draws: int = 1, seed: int = 1234, batch: int = 100
) -> dict[float, float]:
    """Fraction of clips x0 [N, 1, 80, 88] classified correctly from x_t at each time, over `draws` fixed noise
    draws per clip and time (the same draws for every call with the same seed, so checkpoints compare fairly)."""
    was_training = classifier.training
    classifier.eval()
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    result = {}
    for t_val in times:
        correct = 0
        for _ in range(draws):
            for i in range(0, len(x0), batch):
                xb = x0[i : i + batch]
                t = torch.full((len(xb),), float(t_val), device=x0.device)
                x_t = perturb(xb, t, sde, torch.randn(xb.shape, generator=gen, device=x0.device))
                correct += (classifier(x_t, t).argmax(1) == y[i : i + batch]).sum().item()
        result[float(t_val)] = correct / (draws * len(x0))
    classifier.train(was_training)
    return result


@torch.no_grad()
def own_classifier_accuracy(classifier, x0: np.ndarray, digits: list[int], t_min: float, device) -> float:
    """The guiding classifier's own accuracy on samples x0 [N, 1, n_mels, T] at t_min: a quick, biased check."""
    x = torch.from_numpy(x0).to(device)
    t = torch.full((len(x),), t_min, device=device)
    return (classifier(x, t).argmax(1).cpu().numpy() == np.array(digits)).mean().item()
