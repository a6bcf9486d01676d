"""The classifier's backward pass written out as plain tensor ops, so an ONNX exporter can trace it.

Neither torch.onnx nor torch.export can put autograd inside a graph (DESIGN.md). Instead of tracing autograd,
this module runs the frozen classifier's forward pass once, keeps what the backward pass needs, and applies
the adjoint of every layer by hand: a convolution's adjoint is a transposed convolution with the *same*
weight tensor (so the exported graph shares its initializers), GroupNorm and SiLU have closed-form adjoints.

Several cotangents go backward in one batched pass: a cotangent batch [n B, K] holds n stacked cotangents
for the same B inputs; saved activations [B, ...] broadcast over the n copies.

`tests/test_export.py` checks every adjoint against torch autograd on random models, so an architecture
change that this file does not follow fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from c2d.models.classifier import NoiseConditionedClassifier
from c2d.models.nn import GroupNorm, ResBlock


def _hw(x: torch.Tensor) -> tuple[int, int]:
    """Static spatial size [.., H, W] -> (H, W) as Python ints (constants when traced)."""
    return _static(x.shape[2:4])


def _static(sizes) -> tuple[int, ...]:
    """Sizes as Python ints: constants in a traced graph instead of Shape/Gather/Concat chains (batch stays -1)."""
    return tuple(int(s) for s in sizes)


def split_copies(g: torch.Tensor, n: int) -> torch.Tensor:
    """[n B, ...] -> [n, B, ...], so saved [B, ...] tensors broadcast over the n cotangent copies."""
    return g.reshape((n, -1) + _static(g.shape[1:]))


def merge_copies(g: torch.Tensor) -> torch.Tensor:
    """[n, B, ...] -> [n B, ...]."""
    return g.reshape((-1,) + _static(g.shape[2:]))


def conv_adjoint(conv: nn.Conv2d, g: torch.Tensor, in_hw: tuple[int, int], as_conv: bool = True) -> torch.Tensor:
    """d/d input of conv2d (bias-free part). g [N, C_out, h, w] -> [N, C_in, H, W].

    Stride 1 and as_conv: a plain convolution with the weight transposed over channels and flipped in space, padding k-1-p
    (ONNX Runtime's CPU Conv is much faster than its ConvTranspose: benchmarks/export_shipped.py). Strided: a
    transposed convolution with the same weight tensor.
    """
    kh, kw = conv.kernel_size
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    if conv.groups != 1 or conv.dilation != (1, 1):
        raise ValueError(f"no adjoint for grouped or dilated convolutions ({conv})")
    if (sh, sw) == (1, 1) and as_conv:
        return F.conv2d(g, conv.weight.transpose(0, 1).flip(2, 3), padding=(kh - 1 - ph, kw - 1 - pw))
    out_hw = _hw(g)  # static: output_padding must be a constant in the graph
    out_pad = tuple(size - ((o - 1) * s - 2 * p + k) for size, o, s, p, k in zip(in_hw, out_hw, (sh, sw), (ph, pw), (kh, kw)))
    return F.conv_transpose2d(g, conv.weight, stride=conv.stride, padding=conv.padding, output_padding=out_pad)


def _copies(g: torch.Tensor, n: int) -> torch.Tensor:
    """split_copies, skipped for one cotangent (one Reshape node fewer per use in the graph)."""
    return g if n == 1 else split_copies(g, n)


def _merged(g: torch.Tensor, n: int) -> torch.Tensor:
    return g if n == 1 else merge_copies(g)


@dataclass
class NormSiLUSaved:
    """What the adjoint of silu(GroupNorm(x)) needs, computed once in the forward pass and shared by every cotangent:
    x_hat, the normalised input per group [B, G, C/G*H*W], and scale = silu'(a) w rstd [B, C, H, W]
    (a = GroupNorm(x); w the norm's per-channel weight; rstd its per-(sample, group) 1/std)."""

    x_hat: torch.Tensor
    scale: torch.Tensor


def norm_silu_forward(norm: nn.GroupNorm, x: torch.Tensor) -> tuple[torch.Tensor, NormSiLUSaved]:
    """silu(GroupNorm(x)) [B, C, H, W]; the norm is the same maths as F.group_norm."""
    _, c, _, _ = _static(x.shape)
    groups = norm.num_groups
    a, x_hat, rstd = GroupNorm.with_stats(norm, x)  # [B, C, H, W], [B, G, C/G*H*W], [B, G, 1]
    s = torch.sigmoid(a)
    rstd_c = rstd.reshape(-1, groups, 1, 1).expand(-1, groups, c // groups, 1).reshape(-1, c, 1, 1)  # [B, C, 1, 1]
    scale = s * (1.0 + a * (1.0 - s)) * (norm.weight.view(1, c, 1, 1) * rstd_c)  # silu'(a) = s (1 + a (1 - s))
    return a * s, NormSiLUSaved(x_hat, scale)


def norm_silu_adjoint(saved: NormSiLUSaved, g: torch.Tensor, n: int) -> torch.Tensor:
    """d/dx of silu(GroupNorm(x)) applied to g [n B, C, H, W].

    With gy = g silu'(a) w: dx = rstd (gy - mean(gy) - x_hat mean(gy x_hat)) per group. rstd is constant within a
    group, so with gy' = rstd gy = g scale this is gy' - mean(gy') - x_hat mean(gy' x_hat): no separate rstd or w.
    """
    _, c, h, w = _static(saved.scale.shape)  # g may be [n B, C, 1, 1] (the mean-pool adjoint, broadcast here)
    groups, length = _static(saved.x_hat.shape[1:])
    gy = _copies(g, n) * saved.scale
    gy = gy.reshape((-1, groups, length) if n == 1 else (n, -1, groups, length))
    dx = gy - gy.mean(dim=-1, keepdim=True) - saved.x_hat * (gy * saved.x_hat).mean(dim=-1, keepdim=True)
    return _merged(dx.reshape((-1, c, h, w) if n == 1 else (n, -1, c, h, w)), n)


@dataclass
class ResBlockSaved:
    in_hw: tuple[int, int]
    norm1: NormSiLUSaved
    norm2: NormSiLUSaved


def resblock_forward(block: ResBlock, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, ResBlockSaved]:
    """models.nn.ResBlock.forward in eval mode (dropout is identity), keeping what the adjoint needs."""
    a1, n1 = norm_silu_forward(block.norm1, x)
    h = block.conv1(a1) + block.time(F.silu(temb))[:, :, None, None]
    a2, n2 = norm_silu_forward(block.norm2, h)
    out = block.conv2(a2) + block.skip(x)
    return out, ResBlockSaved(_hw(x), n1, n2)


def resblock_adjoint(block: ResBlock, saved: ResBlockSaved, g: torch.Tensor, n: int, as_conv: bool = True) -> torch.Tensor:
    """d/dx of a ResBlock (the time path carries no x gradient). g [n B, C_out, H, W] -> [n B, C_in, H, W]."""
    hw = saved.in_hw
    gh = norm_silu_adjoint(saved.norm2, conv_adjoint(block.conv2, g, hw, as_conv), n)
    gx = norm_silu_adjoint(saved.norm1, conv_adjoint(block.conv1, gh, hw, as_conv), n)
    skip = g if isinstance(block.skip, nn.Identity) else conv_adjoint(block.skip, g, hw, as_conv)
    return gx + skip


@dataclass
class ClassifierSaved:
    """Everything the backward pass needs from one forward pass."""

    input_hw: tuple[int, int]
    level_blocks: list[list[ResBlockSaved]]
    level_hw: list[tuple[int, int]]
    bottleneck: list[ResBlockSaved]
    head: NormSiLUSaved


class ClassifierAdjoint(nn.Module):
    """Forward pass with taps, and the hand-written backward pass, of a frozen NoiseConditionedClassifier."""

    def __init__(self, classifier: NoiseConditionedClassifier, as_conv: bool = True):
        super().__init__()
        self.classifier = classifier
        self.as_conv = as_conv  # stride-1 adjoints as Conv with flipped weights, else ConvTranspose

    def forward_saved(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], ClassifierSaved]:
        """(logits [B, K], taps as in forward_with_taps, saved activations)."""
        enc = self.classifier.encoder
        temb = enc.time_embed(t)
        h = enc.input(x)
        taps, level_saved, level_hw = [], [], []
        for i, blocks in enumerate(enc.levels):
            saved = []
            for block in blocks:
                h, s = resblock_forward(block, h, temb)
                saved.append(s)
            level_saved.append(saved)
            level_hw.append(_hw(h))
            taps.append(h)
            if i < len(enc.downs):
                h = enc.downs[i].conv(h)
        bottleneck = []
        for block in enc.bottleneck:
            h, s = resblock_forward(block, h, temb)
            bottleneck.append(s)
        taps.append(h)
        a, head = norm_silu_forward(self.classifier.head_norm, h)
        logits = self.classifier.head(a.mean(dim=(2, 3)))  # [B, K]
        saved = ClassifierSaved(_hw(x), level_saved, level_hw, bottleneck, head)
        return logits, taps, saved

    def backward(self, saved: ClassifierSaved, cotangent: torch.Tensor, n: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Vector-Jacobian products of the logits with n stacked cotangents [n B, K].

        Returns (gradients at every tap, same order as the taps, each [n B, C_k, H_k, W_k]; gradient at x [n B, 1, H, W]).
        """
        enc = self.classifier.encoder
        h, w = _hw(saved.head.scale)
        g = (cotangent @ self.classifier.head.weight)[:, :, None, None] / float(h * w)  # [n B, C, 1, 1]
        g = norm_silu_adjoint(saved.head, g, n)  # the mean-pool adjoint broadcasts g to [n B, C, h, w]
        bottleneck_grad = g
        for block, s in zip(reversed(enc.bottleneck), reversed(saved.bottleneck)):
            g = resblock_adjoint(block, s, g, n, self.as_conv)
        level_grads = [g] * len(enc.levels)
        for i in reversed(range(len(enc.levels))):
            if i < len(enc.downs):
                g = conv_adjoint(enc.downs[i].conv, g, saved.level_hw[i], self.as_conv)
            level_grads[i] = g
            for block, s in zip(reversed(enc.levels[i]), reversed(saved.level_blocks[i])):
                g = resblock_adjoint(block, s, g, n, self.as_conv)
        return level_grads + [bottleneck_grad], conv_adjoint(enc.input, g, saved.input_hw, self.as_conv)


def guidance_cotangent(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/d logits of sum_k y_k log softmax_k = y - softmax (sum_k y_k); for one-hot y: onehot - softmax."""
    return y - torch.softmax(logits, dim=1) * y.sum(dim=1, keepdim=True)
