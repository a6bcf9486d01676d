"""Building blocks shared by the classifier, the score subnetwork and the U-Net."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of 1000 t followed by an MLP (the DDPM U-Net's time embedding): [B] -> [B, dim]."""

    def __init__(self, dim: int):
        super().__init__()
        self.freq_dim = max(dim // 2, 8)
        self.mlp = nn.Sequential(nn.Linear(self.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        dtype = self.mlp[0].weight.dtype
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=dtype) / half)
        args = 1000.0 * t.to(dtype)[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.sin(args), torch.cos(args)], dim=1))


class ResBlock(nn.Module):
    """GN -> SiLU -> Conv3x3 (+ time) -> GN -> SiLU -> Dropout -> Conv3x3, plus a (1x1) skip."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class Downsample(nn.Module):
    """Strided 3x3 conv: [B, C, H, W] -> [B, C, H/2, W/2]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv: [B, C_in, H, W] -> [B, C_out, 2H, 2W]."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ChannelRMSNorm(nn.Module):
    """RMS normalisation over channels at every position, with a learned per-channel gain."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps) * self.gain


class CrossAttention(nn.Module):
    """Multi-head attention of query maps over key/value maps: q [B, C, H, W], kv [B, C, h, w] -> [B, C, H, W]."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.out = nn.Linear(channels, channels)

    def forward(self, q_map: torch.Tensor, kv_map: torch.Tensor) -> torch.Tensor:
        b, c, h, w = q_map.shape
        q_tok = q_map.flatten(2).transpose(1, 2)  # [B, HW, C]
        kv_tok = kv_map.flatten(2).transpose(1, 2)  # [B, hw, C]
        split = lambda z: z.unflatten(2, (self.heads, c // self.heads)).transpose(1, 2)  # [B, heads, N, C/heads]
        attn = F.scaled_dot_product_attention(split(self.to_q(q_tok)), split(self.to_k(kv_tok)), split(self.to_v(kv_tok)))
        out = self.out(attn.transpose(1, 2).flatten(2))  # [B, HW, C]
        return out.transpose(1, 2).reshape(b, c, h, w)


class Encoder(nn.Module):
    """U-Net encoder: input conv, ResBlocks over the resolutions, bottleneck. Returns the skip-point taps.

    x [B, 1, 80, 88] -> taps [h_0 (80x88), h_1 (40x44), h_2 (20x22), h_bottleneck (20x22)] and the time embedding.
    """

    def __init__(self, cfg):
        super().__init__()
        widths = cfg.widths
        self.time_embed = TimeEmbedding(cfg.time_dim)
        self.input = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        c = widths[0]
        for i, w in enumerate(widths):
            blocks = [ResBlock(c if j == 0 else w, w, cfg.time_dim, cfg.groups, cfg.dropout) for j in range(cfg.blocks_per_level)]
            self.levels.append(nn.ModuleList(blocks))
            c = w
            if i < len(widths) - 1:
                self.downs.append(Downsample(w))
        self.bottleneck = nn.ModuleList(
            [ResBlock(c, c, cfg.time_dim, cfg.groups, cfg.dropout) for _ in range(cfg.bottleneck_blocks)]
        )
        self.tap_channels = tuple(widths) + (c,)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        temb = self.time_embed(t)
        h = self.input(x)
        taps = []
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, temb)
            taps.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        for block in self.bottleneck:
            h = block(h, temb)
        taps.append(h)
        return taps, temb
