"""Frozen, typed configs. Each checkpoint stores its config so that the file alone rebuilds the model."""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from c2d.runtime.audio import MelConfig
from c2d.runtime.sde import SDEConfig


@dataclass(frozen=True)
class EncoderConfig:
    """The U-Net encoder shared by the classifier and the U-Net baseline."""

    in_channels: int = 1  # log-Mel is one image channel [B, 1, 80, 88]
    base_width: int = 32  # channels at the finest resolution
    width_mults: tuple[int, ...] = (1, 2, 2)  # one entry per resolution (80x88, 40x44, 20x22)
    blocks_per_level: int = 2  # ResBlocks per resolution
    bottleneck_blocks: int = 2  # ResBlocks at the coarsest resolution after the last level
    time_dim: int = 128  # width of the time embedding MLP output
    groups: int = 8  # GroupNorm groups
    dropout: float = 0.1

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.base_width * m for m in self.width_mults)


@dataclass(frozen=True)
class ClassifierConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    n_classes: int = 10  # digits zero..nine


@dataclass(frozen=True)
class SubnetConfig:
    """Score subnetwork on the frozen classifier's taps (METHOD.md)."""

    use_gradient_taps: bool = True  # False gives the paper's "without gradient taps" ablation
    base_width: int = 32  # decoder width at the finest resolution
    width_mults: tuple[int, ...] = (1, 2, 2)  # decoder widths per resolution, fine to coarse
    blocks_per_stage: int = 3  # ResBlocks per decoder stage
    heads: int = 4  # cross-attention heads in each fusion block (CPU attention cost grows with heads)
    kv_grid: tuple[int, int] = (20, 22)  # attention runs on at most this grid (queries and keys/values pooled)
    time_dim: int = 128
    groups: int = 8
    dropout: float = 0.0
    # Predict eps as the Gaussian denoiser's eps plus a learned residual (sampling ODE fix, docs/samplers.md).
    # The Gaussian is one mean and variance of the normalised training log-Mels (`c2d train --gaussian-skip` measures them).
    gaussian_skip: bool = False
    data_mean: float = 0.0
    data_var: float = 1.0
    # How the raw output becomes eps (models/precond.py): "eps", "gaussian-skip" (what gaussian_skip=True means) or
    # "edm" (EDM's c_skip / c_out for the VP SDE, sigma_data^2 = data_var, centred on data_mean).
    output: str = "eps"

    @property
    def output_kind(self) -> str:
        return "gaussian-skip" if self.gaussian_skip else self.output


@dataclass(frozen=True)
class UNetConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder_blocks_per_level: int = 3  # ResBlocks per decoder level (each concatenates one skip)
    output: str = "eps"  # as SubnetConfig.output
    data_mean: float = 0.0
    data_var: float = 1.0


@dataclass(frozen=True)
class ModelSizes:
    """A named size: the three networks of one experiment."""

    classifier: ClassifierConfig
    subnet: SubnetConfig
    unet: UNetConfig


def _sizes(enc: EncoderConfig, sub: SubnetConfig, unet_blocks: int = 3) -> ModelSizes:
    return ModelSizes(ClassifierConfig(enc), sub, UNetConfig(enc, unet_blocks))


SIZES: dict[str, ModelSizes] = {
    # A few seconds per step on CPU at most; for tests.
    "tiny": _sizes(
        EncoderConfig(base_width=8, width_mults=(1, 2, 2), blocks_per_level=1, bottleneck_blocks=1, time_dim=16, groups=4, dropout=0.0),
        SubnetConfig(base_width=8, blocks_per_stage=1, heads=2, time_dim=16, groups=4),
        unet_blocks=1,
    ),
    # Trains to useful quality on a 2-core CPU in about an hour per model (bf16 autocast).
    "small": _sizes(
        EncoderConfig(base_width=32, width_mults=(1, 2, 2), blocks_per_level=1, bottleneck_blocks=2),
        SubnetConfig(base_width=16, width_mults=(1, 2, 4), blocks_per_stage=3, heads=1),
        unet_blocks=2,
    ),
    # Sized like the paper (7.9 M classifier, 4.4 M subnetwork, 16.6 M U-Net): here 8.3 M, 4.3 M, 16.3 M.
    "paper": _sizes(
        EncoderConfig(base_width=64, width_mults=(1, 2, 4), blocks_per_level=2, bottleneck_blocks=4, time_dim=256),
        SubnetConfig(base_width=52, width_mults=(1, 2, 4), blocks_per_stage=3, time_dim=256, groups=4),
        unet_blocks=4,
    ),
}


def config_to_dict(cfg: Any) -> dict:
    return asdict(cfg)


def config_from_dict(cls: type, data: dict) -> Any:
    """Rebuild a (nested) frozen dataclass from `asdict` output; unknown keys are an error."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be stored as a dict, got {type(data).__name__}")
    kwargs = {}
    for name, value in data.items():
        ftype = known[name].type
        sub = _DATACLASSES.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None:
            kwargs[name] = config_from_dict(sub, value)
            continue
        value = tuple(value) if isinstance(value, list) else value
        _check_like_default(cls, known[name], value)
        kwargs[name] = value
    return cls(**kwargs)


MAX_CONFIG_INT = 1 << 16  # no width, count or size in a config is larger; a bigger one would only exhaust memory


def _check_like_default(cls: type, f, value) -> None:
    """A stored value has the default's type (and a tuple its length if the annotation fixes it): a damaged config
    fails here, with the field named, instead of deep inside the model's forward pass."""
    default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else None)
    if default is None:
        return
    where = f"{cls.__name__}.{f.name} = {value!r}"

    def int_ok(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_CONFIG_INT

    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = int_ok(value)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif isinstance(default, tuple):
        fixed = "..." not in str(f.type)
        ok = (
            isinstance(value, tuple)
            and 1 <= len(value) <= 16
            and (not fixed or len(value) == len(default))
            and all(int_ok(v) and v >= 1 for v in value)
        )
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{where} does not fit the field (default {default!r})")


_DATACLASSES = {c.__name__: c for c in (MelConfig, SDEConfig, EncoderConfig, ClassifierConfig, SubnetConfig, UNetConfig)}


def register_config(cls: type) -> type:
    """Let config_from_dict rebuild `cls` where another stored config nests it (a class decorator)."""
    _DATACLASSES[cls.__name__] = cls
    return cls
