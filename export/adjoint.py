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
from c2d.models.nn import ResBlock


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


@dataclass
class GroupNormSaved:
    """What GroupNorm's adjoint needs: normalised input per group [B, G, C/G*H*W] and 1/std [B, G, 1]."""

    x_hat: torch.Tensor
    rstd: torch.Tensor


def group_norm_forward(norm: nn.GroupNorm, x: torch.Tensor) -> tuple[torch.Tensor, GroupNormSaved]:
    """y = (x - mean) / sqrt(var + eps) * w + b per (sample, group); same maths as F.group_norm."""
    _, c, h, w = _static(x.shape)
    xg = x.reshape(-1, norm.num_groups, (c // norm.num_groups) * h * w)  # [B, G, C/G*H*W]
    mean = xg.mean(dim=2, keepdim=True)
    centred = xg - mean
    rstd = torch.rsqrt(centred.pow(2).mean(dim=2, keepdim=True) + norm.eps)
    x_hat = centred * rstd
    y = x_hat.reshape(-1, c, h, w) * norm.weight.view(1, c, 1, 1) + norm.bias.view(1, c, 1, 1)
    return y, GroupNormSaved(x_hat, rstd)


def group_norm_adjoint(norm: nn.GroupNorm, saved: GroupNormSaved, g: torch.Tensor, n: int) -> torch.Tensor:
    """dx = rstd (gy - mean(gy) - x_hat mean(gy x_hat)), gy = g w, per group; g [n B, C, H, W]."""
    _, c, h, w = _static(g.shape)
    gy = split_copies(g * norm.weight.view(1, c, 1, 1), n).reshape(n, -1, norm.num_groups, int(saved.x_hat.shape[2]))
    dx = saved.rstd * (gy - gy.mean(dim=3, keepdim=True) - saved.x_hat * (gy * saved.x_hat).mean(dim=3, keepdim=True))
    return merge_copies(dx).reshape(-1, c, h, w)


def silu_derivative(a: torch.Tensor) -> torch.Tensor:
    """d silu(a) / da = s (1 + a (1 - s)), s = sigmoid(a)."""
    s = torch.sigmoid(a)
    return s * (1.0 + a * (1.0 - s))


def _scale(g: torch.Tensor, d: torch.Tensor, n: int) -> torch.Tensor:
    """Elementwise g * d with g [n B, ...] and d [B, ...]."""
    return merge_copies(split_copies(g, n) * d)


@dataclass
class ResBlockSaved:
    in_hw: tuple[int, int]
    norm1: GroupNormSaved
    dsilu1: torch.Tensor  # silu'(norm1(x)) [B, C_in, H, W]
    norm2: GroupNormSaved
    dsilu2: torch.Tensor  # silu'(norm2(h)) [B, C_out, H, W]


def resblock_forward(block: ResBlock, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, ResBlockSaved]:
    """models.nn.ResBlock.forward in eval mode (dropout is identity), keeping what the adjoint needs."""
    a1, n1 = group_norm_forward(block.norm1, x)
    h = block.conv1(F.silu(a1)) + block.time(F.silu(temb))[:, :, None, None]
    a2, n2 = group_norm_forward(block.norm2, h)
    out = block.conv2(F.silu(a2)) + block.skip(x)
    return out, ResBlockSaved(_hw(x), n1, silu_derivative(a1), n2, silu_derivative(a2))


def resblock_adjoint(block: ResBlock, saved: ResBlockSaved, g: torch.Tensor, n: int, as_conv: bool = True) -> torch.Tensor:
    """d/dx of a ResBlock (the time path carries no x gradient). g [n B, C_out, H, W] -> [n B, C_in, H, W]."""
    hw = saved.in_hw
    gh = group_norm_adjoint(block.norm2, saved.norm2, _scale(conv_adjoint(block.conv2, g, hw, as_conv), saved.dsilu2, n), n)
    gx = group_norm_adjoint(block.norm1, saved.norm1, _scale(conv_adjoint(block.conv1, gh, hw, as_conv), saved.dsilu1, n), n)
    skip = g if isinstance(block.skip, nn.Identity) else conv_adjoint(block.skip, g, hw, as_conv)
    return gx + skip


@dataclass
class ClassifierSaved:
    """Everything the backward pass needs from one forward pass."""

    input_hw: tuple[int, int]
    level_blocks: list[list[ResBlockSaved]]
    level_hw: list[tuple[int, int]]
    bottleneck: list[ResBlockSaved]
    head_norm: GroupNormSaved
    head_dsilu: torch.Tensor  # [B, C, h, w]


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
        a, head_norm = group_norm_forward(self.classifier.head_norm, h)
        logits = self.classifier.head(F.silu(a).mean(dim=(2, 3)))  # [B, K]
        saved = ClassifierSaved(_hw(x), level_saved, level_hw, bottleneck, head_norm, silu_derivative(a))
        return logits, taps, saved

    def backward(self, saved: ClassifierSaved, cotangent: torch.Tensor, n: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Vector-Jacobian products of the logits with n stacked cotangents [n B, K].

        Returns (gradients at every tap, same order as the taps, each [n B, C_k, H_k, W_k]; gradient at x [n B, 1, H, W]).
        """
        enc, head_dsilu = self.classifier.encoder, saved.head_dsilu
        h, w = _hw(head_dsilu)
        g = (cotangent @ self.classifier.head.weight)[:, :, None, None] / float(h * w)  # [n B, C, 1, 1]
        g = _scale(g, head_dsilu, n)  # mean-pool adjoint broadcasts to [n B, C, h, w], times silu'
        g = group_norm_adjoint(self.classifier.head_norm, saved.head_norm, g, n)
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
