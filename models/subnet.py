"""The score subnetwork on the frozen classifier, and the single-backbone generator that joins them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from c2d.models.classifier import NoiseConditionedClassifier, freeze
from c2d.models.config import SubnetConfig
from c2d.models.nn import ChannelRMSNorm, CrossAttention, GroupNorm, ResBlock, TimeEmbedding, Upsample, rms_then_project
from c2d.models.precond import KINDS as OUTPUT_KINDS
from c2d.models.precond import eps_from_output
from c2d.models.sde import alpha_sigma
from c2d.runtime.sde import SDEConfig


def positional_terms(channels: int, h: int, w: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed 2-D sinusoidal positions, half the channels for rows and half for columns, as two broadcast terms:
    rows [1, C, H, 1] (zero outside the first C/2 channels) and cols [1, C, 1, W] (zero outside the next C/2).

    Their sum is the positional map [1, C, H, W]; each channel gets exactly one non-zero term, so z + rows + cols
    equals z + map bit for bit, and a traced graph stores C (H + W) constants instead of C H W.
    """
    quarter = channels // 4
    freqs = torch.exp(-math.log(100.0) * torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1))
    rows = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freqs  # [H, C/4]
    cols = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freqs  # [W, C/4]
    row_enc = torch.cat([rows.sin(), rows.cos()], 1).T  # [C/4 * 2, H]
    col_enc = torch.cat([cols.sin(), cols.cos()], 1).T  # [C/4 * 2, W]
    half = row_enc.shape[0]
    row_term = F.pad(row_enc, (0, 0, 0, channels - half))  # [C, H]
    col_term = F.pad(col_enc, (0, 0, half, channels - 2 * half))  # [C, W]
    return row_term[None, :, :, None].to(dtype), col_term[None, :, None, :].to(dtype)


class TapFusion(nn.Module):
    """RMS-normalise a forward tap h and its gradient tap g, project both to `width`, fuse by cross-attention.

    out = q + g' + Up(Attn(P(q) + pos, P(g') + pos)), with q = P_h(RMS(h)), g' = P_g(RMS(g)), P average pooling
    to at most `kv_grid` positions and Up nearest upsampling back to the tap's resolution. Attention runs on the
    coarse grid (at most 20 x 22 = 440 tokens), so it stays cheap at every tap; the full-resolution gradient
    reaches the decoder through the local term g'. Without gradient taps: out = q.
    """

    def __init__(self, c_tap: int, width: int, use_grad: bool, heads: int, kv_grid: tuple[int, int]):
        super().__init__()
        self.use_grad = use_grad
        self.kv_grid = kv_grid
        self.norm_h = ChannelRMSNorm(c_tap)
        self.proj_h = nn.Conv2d(c_tap, width, 1)
        if use_grad:
            self.norm_g = ChannelRMSNorm(c_tap)
            self.proj_g = nn.Conv2d(c_tap, width, 1)
            self.attn = CrossAttention(width, heads)

    def forward(self, h: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        q = rms_then_project(self.norm_h, self.proj_h, h)  # [B, width, H, W]
        if not self.use_grad:
            return q
        gp = rms_then_project(self.norm_g, self.proj_g, g)
        _, c, hh, ww = (int(s) for s in q.shape)
        # ints: the pooling kernel is a static hyperparameter per resolution, also when an exporter traces sizes
        kernel = (max(1, hh // self.kv_grid[0]), max(1, ww // self.kv_grid[1]))
        pool = (lambda z: F.avg_pool2d(z, kernel)) if kernel != (1, 1) else (lambda z: z)
        q_c, g_c = pool(q), pool(gp)  # [B, width, <=20, <=22]
        rows, cols = positional_terms(int(c), int(q_c.shape[2]), int(q_c.shape[3]), q.device, q.dtype)  # constants when traced
        fused = self.attn(q_c + rows + cols, g_c + rows + cols)
        if kernel != (1, 1):
            exact = tuple(int(n) * k for n, k in zip(q_c.shape[2:], kernel)) == (hh, ww)
            # an integer scale factor resizes exactly like size=(hh, ww), and traces without Shape nodes
            fused = (
                F.interpolate(fused, scale_factor=kernel, mode="nearest") if exact else F.interpolate(fused, size=(hh, ww), mode="nearest")
            )  # back to [B, width, H, W]
        return q + gp + fused


class ScoreSubnet(nn.Module):
    """Coarse-to-fine decoder over the fused taps: predicted noise eps [B, 1, H, W].

    taps: per resolution fine to coarse, then the bottleneck (which shares the coarsest resolution).
    """

    def __init__(self, cfg: SubnetConfig, tap_channels: tuple[int, ...], out_channels: int = 1):
        super().__init__()
        self.cfg = cfg
        if cfg.output not in OUTPUT_KINDS or (cfg.gaussian_skip and cfg.output != "eps"):
            raise ValueError(f"subnet output {cfg.output!r} (gaussian_skip {cfg.gaussian_skip}) is not one of {', '.join(OUTPUT_KINDS)}")
        n_levels = len(tap_channels) - 1
        if len(cfg.width_mults) != n_levels:
            raise ValueError(f"subnet width_mults {cfg.width_mults} must have one entry per classifier level ({n_levels})")
        widths = [cfg.base_width * m for m in cfg.width_mults]
        levels = list(range(n_levels)) + [n_levels - 1]  # the resolution level of each tap
        self.fusions = nn.ModuleList(
            TapFusion(c, widths[lv], cfg.use_gradient_taps, cfg.heads, tuple(cfg.kv_grid)) for c, lv in zip(tap_channels, levels)
        )
        self.time_embed = TimeEmbedding(cfg.time_dim)
        self.stages = nn.ModuleList(
            nn.ModuleList(ResBlock(w, w, cfg.time_dim, cfg.groups, cfg.dropout) for _ in range(cfg.blocks_per_stage)) for w in widths
        )
        self.ups = nn.ModuleList(Upsample(widths[i + 1], widths[i]) for i in range(n_levels - 1))
        self.head_norm = GroupNorm(min(cfg.groups, widths[0]), widths[0])
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        taps: list[torch.Tensor],
        tap_grads: list[torch.Tensor] | None,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        bottleneck: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """cond [B, time_dim]: an extra embedding added to the time embedding (the student's digit and guidance);
        bottleneck [B, w_coarsest, h, w]: an extra input added where the decoder starts (the student's guidance seed)."""
        temb = self.time_embed(t) if cond is None else self.time_embed(t) + cond
        grads = tap_grads if tap_grads is not None else [None] * len(taps)
        fused = [fusion(h, g) for fusion, h, g in zip(self.fusions, taps, grads)]
        z = fused[-1] + fused[-2]  # bottleneck and coarsest level share a resolution
        if bottleneck is not None:
            z = z + bottleneck
        for level in reversed(range(len(self.stages))):
            if level < len(self.stages) - 1:
                z = self.ups[level](z) + fused[level]  # [B, w_level, H_level, W_level]
            for block in self.stages[level]:
                z = block(z, temb)
        return self.head(F.silu(self.head_norm(z)))


def classifier_pass(
    classifier: NoiseConditionedClassifier,
    x: torch.Tensor,
    t: torch.Tensor,
    want_tap_grads: bool,
    y_onehot: torch.Tensor | None = None,
):
    """One forward pass through the frozen classifier and the backward passes that hang off it.

    Returns (logits [B, K], taps, tap_grads, guidance_grad), all detached:
      tap_grads[k]  = d logsumexp(logits) / d h_k  (total derivative; None unless want_tap_grads),
      guidance_grad = d log p(y | x, t) / d x        (None unless y_onehot is given).
    """
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        logits, taps = classifier.forward_with_taps(x_in, t)
        logits = logits.float()
        tap_grads = guidance = None
        if want_tap_grads:
            lse = torch.logsumexp(logits, dim=1)
            tap_grads = [g.detach() for g in torch.autograd.grad(lse.sum(), taps, retain_graph=y_onehot is not None)]
        if y_onehot is not None:
            log_p_y = (logits.log_softmax(dim=1) * y_onehot).sum()
            guidance = torch.autograd.grad(log_p_y, x_in)[0].detach()
    return logits.detach(), [h.detach() for h in taps], tap_grads, guidance


def subnet_eps(subnet: ScoreSubnet, taps, tap_grads, t: torch.Tensor, x: torch.Tensor, alpha_sigma_t) -> torch.Tensor:
    """The subnet's unguided eps [B, 1, H, W]: its output under the config's parameterisation (models/precond.py).
    alpha_sigma_t: (alpha_t, sigma_t) [B] each (the exported graph passes its own ONNX-friendly sigma)."""
    cfg = subnet.cfg
    return eps_from_output(cfg.output_kind, subnet(taps, tap_grads, t), x, *alpha_sigma_t, cfg.data_mean, cfg.data_var)


def guide_eps(eps: torch.Tensor, guidance: torch.Tensor, t: torch.Tensor, gamma: torch.Tensor, sde: SDEConfig) -> torch.Tensor:
    """Classifier guidance in noise space: score + gamma grad log p(y|x)  <=>  eps - gamma sigma_t grad log p(y|x)."""
    _, sigma = alpha_sigma(t, sde)
    return eps - (gamma * sigma).view(-1, 1, 1, 1) * guidance


class SingleBackbone(nn.Module):
    """The paper's generator: frozen classifier + trainable score subnetwork, one classifier pass per step."""

    def __init__(self, classifier: NoiseConditionedClassifier, subnet: ScoreSubnet, sde: SDEConfig):
        super().__init__()
        self.classifier = freeze(classifier)
        self.subnet = subnet
        self.sde = sde

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()  # frozen for good, also while the subnet trains
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Unconditional predicted noise eps(x_t, t) [B, 1, H, W] (what DSM trains)."""
        _, taps, tap_grads, _ = classifier_pass(self.classifier, x, t, self.subnet.cfg.use_gradient_taps)
        return subnet_eps(self.subnet, taps, tap_grads, t, x, alpha_sigma(t, self.sde))

    def guided(self, x, t, y_onehot, gamma) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided eps, logits) from one classifier forward pass feeding taps, tap gradients and guidance."""
        logits, taps, tap_grads, guidance = classifier_pass(self.classifier, x, t, self.subnet.cfg.use_gradient_taps, y_onehot)
        eps = subnet_eps(self.subnet, taps, tap_grads, t, x, alpha_sigma(t, self.sde))
        return guide_eps(eps, guidance, t, gamma, self.sde), logits
