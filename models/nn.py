"""Building blocks shared by the classifier, the score subnetwork and the U-Net."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def normalise_last_dim(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat, rstd): x normalised over its last dim, and 1 / sqrt(var + eps) [..., 1]."""
    mean = x.mean(dim=-1, keepdim=True)
    centred = x - mean
    rstd = torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + eps)
    return centred * rstd, rstd


class NormaliseLastDim(torch.autograd.Function):
    """normalise_last_dim, exported as ONE LayerNormalization node whose optional InvStdDev output is rstd.

    Written out, the statistics are eight elementwise and reduction nodes per GroupNorm; ONNX Runtime and OpenVINO
    both run LayerNormalization (opset 17, with its Mean and InvStdDev outputs) as one fused kernel. The scale of
    ones is an Expand of a scalar, which the engines fold at load, so the file does not grow.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float, size: int):
        return normalise_last_dim(x, eps)

    @staticmethod
    def symbolic(g, x, eps: float, size: int):
        ones = g.op("Expand", g.op("Constant", value_t=torch.ones(1)), g.op("Constant", value_t=torch.tensor([size])))
        x_hat, _, rstd = g.op("LayerNormalization", x, ones, axis_i=-1, epsilon_f=eps, outputs=3)
        return x_hat, rstd


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm whose ONNX export is one LayerNormalization over [B, G, C/G*H*W] and the affine, with static
    sizes: torch's own export is InstanceNormalization between Shape/Gather/Concat-computed reshapes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return super().forward(x)
        return GroupNorm.with_stats(self, x)[0]

    def with_stats(self: nn.GroupNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(y [B, C, H, W], x_hat [B, G, C/G*H*W], rstd [B, G, 1]); the maths of F.group_norm. Works on any
        nn.GroupNorm (the classifier's adjoint calls it as GroupNorm.with_stats(norm, x))."""
        _, c, h, w = (int(s) for s in x.shape)
        length = (c // self.num_groups) * h * w
        xg = x.reshape(-1, self.num_groups, length)
        if torch.onnx.is_in_onnx_export():
            x_hat, rstd = NormaliseLastDim.apply(xg, float(self.eps), length)
        else:
            x_hat, rstd = normalise_last_dim(xg, self.eps)
        return x_hat.reshape(-1, c, h, w) * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1), x_hat, rstd


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
        self.norm1 = GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2 = GroupNorm(min(groups, c_out), c_out)
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
        return self.normalise(x) * self.gain

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """x / rms over channels, without the gain."""
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


def rms_then_project(norm: ChannelRMSNorm, proj: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """proj(norm(x)) for a 1x1 convolution. In an ONNX export the norm's gain is folded into the convolution's weight
    (one full-size Mul fewer; the folded weight becomes a constant of the graph)."""
    if not torch.onnx.is_in_onnx_export():
        return proj(norm(x))
    return F.conv2d(norm.normalise(x), proj.weight * norm.gain.view(1, -1, 1, 1), proj.bias)


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
        if torch.onnx.is_in_onnx_export():
            return self.channels_first(q_map, kv_map)
        # Sizes as Python ints (batch -1): a traced graph gets constants instead of Shape/Gather/Concat chains.
        _, c, h, w = (int(s) for s in q_map.shape)
        d = c // self.heads
        q_tok = q_map.reshape(-1, c, h * w).transpose(1, 2)  # [B, HW, C]
        kv_tok = kv_map.reshape(-1, c, int(kv_map.shape[2]) * int(kv_map.shape[3])).transpose(1, 2)  # [B, hw, C]
        split = lambda z: z.reshape(-1, int(z.shape[1]), self.heads, d).transpose(1, 2)  # [B, heads, N, C/heads]
        attn = F.scaled_dot_product_attention(split(self.to_q(q_tok)), split(self.to_k(kv_tok)), split(self.to_v(kv_tok)), scale=1.0 / math.sqrt(d))
        out = self.out(attn.transpose(1, 2).reshape(-1, h * w, c))  # [B, HW, C]
        return out.transpose(1, 2).reshape(-1, c, h, w)

    def channels_first(self, q_map: torch.Tensor, kv_map: torch.Tensor) -> torch.Tensor:
        """The same attention on [B, C, N] tokens, as exported: projections as weight @ tokens, so the graph has no
        token transposes (the two left in the score products fold into MatMul), and 1/sqrt(d) folded into W_q."""
        _, c, h, w = (int(s) for s in q_map.shape)
        d = c // self.heads
        q_tok, kv_tok = q_map.reshape(-1, c, h * w), kv_map.reshape(-1, c, int(kv_map.shape[2]) * int(kv_map.shape[3]))
        heads = lambda z: z.reshape(-1, self.heads, d, int(z.shape[2]))  # [B, C, N] -> [B, heads, d, N]
        q = heads(torch.matmul(self.to_q.weight / math.sqrt(d), q_tok))
        k, v = heads(torch.matmul(self.to_k.weight, kv_tok)), heads(torch.matmul(self.to_v.weight, kv_tok))
        attn = torch.softmax(torch.matmul(q.transpose(2, 3), k), dim=-1)  # [B, heads, N, M]
        out = torch.matmul(v, attn.transpose(2, 3)).reshape(-1, c, h * w)  # [B, C, N]
        return (torch.matmul(self.out.weight, out) + self.out.bias.view(1, c, 1)).reshape(-1, c, h, w)


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
        self.bottleneck = nn.ModuleList([ResBlock(c, c, cfg.time_dim, cfg.groups, cfg.dropout) for _ in range(cfg.bottleneck_blocks)])
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
