"""Baselines: a U-Net score model trained end to end, and two-model guidance (U-Net + classifier)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from c2d.models.classifier import NoiseConditionedClassifier, freeze
from c2d.models.config import UNetConfig
from c2d.models.nn import Encoder, GroupNorm, ResBlock, Upsample
from c2d.models.precond import eps_from_output
from c2d.models.sde import alpha_sigma
from c2d.models.subnet import classifier_pass, guide_eps
from c2d.runtime.sde import SDEConfig


class UNet(nn.Module):
    """Encoder (same shape as the classifier's) + decoder with concatenated skips: eps(x_t, t) [B, 1, H, W]."""

    def __init__(self, cfg: UNetConfig, out_channels: int = 1):
        super().__init__()
        self.cfg = cfg
        enc = cfg.encoder
        self.encoder = Encoder(enc)
        widths = enc.widths
        self.stages = nn.ModuleList()
        for level, w in enumerate(widths):
            c_in = self.encoder.tap_channels[-1] if level == len(widths) - 1 else w
            blocks = [
                ResBlock((c_in if j == 0 else w) + (widths[level] if j == 0 else 0), w, enc.time_dim, enc.groups, enc.dropout)
                for j in range(cfg.decoder_blocks_per_level)
            ]
            self.stages.append(nn.ModuleList(blocks))
        self.ups = nn.ModuleList(Upsample(widths[i + 1], widths[i]) for i in range(len(widths) - 1))
        self.head_norm = GroupNorm(min(enc.groups, widths[0]), widths[0])
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        taps, temb = self.encoder(x, t)
        z = taps[-1]
        for level in reversed(range(len(self.stages))):
            if level < len(self.stages) - 1:
                z = self.ups[level](z)
            for j, block in enumerate(self.stages[level]):
                z = block(torch.cat([z, taps[level]], dim=1) if j == 0 else z, temb)  # skip joins the first block
        return self.head(F.silu(self.head_norm(z)))


class TwoModel(nn.Module):
    """Classic classifier guidance: a U-Net's eps guided by a separate frozen classifier's input gradient."""

    def __init__(self, unet: UNet, classifier: NoiseConditionedClassifier, sde: SDEConfig):
        super().__init__()
        self.unet = unet
        self.classifier = freeze(classifier)
        self.sde = sde

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet_eps(self.unet, x, t, alpha_sigma(t, self.sde))

    def guided(self, x, t, y_onehot, gamma) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _, _, guidance = classifier_pass(self.classifier, x, t, False, y_onehot)
        return guide_eps(self(x, t), guidance, t, gamma, self.sde), logits


def unet_eps(unet: UNet, x: torch.Tensor, t: torch.Tensor, alpha_sigma_t) -> torch.Tensor:
    """The U-Net's eps [B, 1, H, W] under its config's output parameterisation (models/precond.py);
    alpha_sigma_t: (alpha_t, sigma_t) [B] each."""
    cfg = unet.cfg
    return eps_from_output(cfg.output, unet(x, t), x, *alpha_sigma_t, cfg.data_mean, cfg.data_var)
