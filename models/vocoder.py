"""A Fourier-domain vocoder in the style of Vocos (Siuzdak 2024): log-Mel [B, n_mels, T] -> waveform [B, T * hop].

ConvNeXt blocks run at the mel frame rate (no upsampling convolutions); a linear head predicts, per frame, the STFT's
log-magnitude and phase, and a fixed inverse STFT turns that spectrum into samples. The inverse STFT is a
ConvTranspose1d over a windowed inverse-DFT basis divided by the window-sum envelope, so the whole model exports to one
ONNX graph (torch.istft does not export). Its framing is runtime.audio.stft's (centred, periodic Hann): frame i is
centred on sample i * hop, like the mel frame it comes from, and `InverseSTFT(stft(x)[..., :T])` returns x.

Trained by distillation from HiFi-GAN V1 universal (models/vocoder_train.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VocoderConfig:
    n_mels: int = 80
    dim: int = 128  # channels of the ConvNeXt trunk
    intermediate: int = 384  # hidden width of each block's pointwise MLP
    layers: int = 8  # ConvNeXt blocks
    kernel: int = 7  # depthwise kernel in frames (receptive field: 1 + layers * (kernel - 1) frames)
    n_fft: int = 1024  # the inverse STFT's size and Hann window (the bundle's mel n_fft)
    hop_length: int = 256
    max_log_magnitude: float = math.log(100.0)  # clamp before exp: an untrained head cannot overflow (Vocos: 1e2)
    log_mel_center: float = -5.0  # fixed affine input scaling of the natural-log Mel (floor -11.5, loud ~ +1)
    log_mel_scale: float = 3.0

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1


def hann(n: int) -> torch.Tensor:
    return torch.hann_window(n, periodic=True, dtype=torch.float64)


class InverseSTFT(nn.Module):
    """(real, imag) [B, bins, T] -> [B, T * hop]: windowed overlap-add of the inverse real DFT of every frame.

    irfft as a basis: x[n] = (1/N) sum_k c_k (Re X_k cos(2 pi k n / N) - Im X_k sin(2 pi k n / N)), c_k = 2 except
    for DC and Nyquist (1). The synthesis window is folded into the basis; the envelope sum_i w^2(n - i hop) is
    computed the same way from a ones input, so the graph works for any T."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        bins = n_fft // 2 + 1
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        n = torch.arange(n_fft, dtype=torch.float64)[None, :]
        coef = torch.full((bins, 1), 2.0, dtype=torch.float64)
        coef[0] = coef[-1] = 1.0
        angle = 2 * math.pi * k * n / n_fft
        window = hann(n_fft)[None, :]
        basis = torch.cat([coef * torch.cos(angle), -coef * torch.sin(angle)]) * window / n_fft  # [2 * bins, n_fft]
        self.register_buffer("basis", basis[:, None, :].float(), persistent=False)  # ConvTranspose1d weight [C_in, 1, k]
        self.register_buffer("window_sq", (window**2)[None].float(), persistent=False)  # [1, 1, n_fft]

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        frames = real.shape[-1]
        summed = F.conv_transpose1d(torch.cat([real, imag], dim=1), self.basis, stride=self.hop_length)  # [B, 1, (T-1) hop + n_fft]
        ones = torch.ones_like(real[:1, :1, :])  # [1, 1, T]
        envelope = F.conv_transpose1d(ones, self.window_sq, stride=self.hop_length)
        wave = summed / envelope.clamp_min(1e-8)
        start = self.n_fft // 2
        return wave[:, 0, start : start + frames * self.hop_length]  # [B, T * hop]


class ConvNeXtBlock(nn.Module):
    """Depthwise conv over frames, LayerNorm, pointwise MLP (GELU), layer scale, residual. [B, T, C] -> [B, T, C]."""

    def __init__(self, dim: int, intermediate: int, kernel: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, intermediate)
        self.pw2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        return x + self.gamma * self.pw2(F.gelu(self.pw1(self.norm(h))))


class FourierVocoder(nn.Module):
    """log-Mel [B, n_mels, T] (natural log, floor 1e-5) -> waveform [B, T * hop]."""

    def __init__(self, cfg: VocoderConfig = VocoderConfig()):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(cfg.n_mels, cfg.dim, cfg.kernel, padding=cfg.kernel // 2)
        self.norm_in = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.intermediate, cfg.kernel, 1.0 / cfg.layers) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, 2 * cfg.bins)  # log-magnitude and phase angle per bin
        self.istft = InverseSTFT(cfg.n_fft, cfg.hop_length)

    def spectrum(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log-Mel [B, n_mels, T] -> predicted STFT (real, imag), each [B, bins, T]."""
        x = (log_mel - self.cfg.log_mel_center) / self.cfg.log_mel_scale
        h = self.norm_in(self.embed(x).transpose(1, 2))  # [B, T, dim]
        for block in self.blocks:
            h = block(h)
        log_mag, phase = self.head(self.norm_out(h)).transpose(1, 2).chunk(2, dim=1)  # each [B, bins, T]
        magnitude = torch.exp(log_mag.clamp(max=self.cfg.max_log_magnitude))
        return magnitude * torch.cos(phase), magnitude * torch.sin(phase)  # the phase as a unit phasor

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.istft(*self.spectrum(log_mel))
