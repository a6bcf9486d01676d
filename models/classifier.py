"""The noise-conditioned classifier: the frozen backbone of the single-backbone generator."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from c2d.models.config import ClassifierConfig
from c2d.models.nn import Encoder, GroupNorm


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
