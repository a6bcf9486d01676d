"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True.

A checkpoint rebuilds its own model: it stores the config, and a subnetwork checkpoint embeds the frozen
classifier it was trained on (weights, config and SHA-256), so the file alone is a complete generator.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from c2d.models.classifier import NoiseConditionedClassifier
from c2d.models.config import ClassifierConfig, SubnetConfig, UNetConfig, config_from_dict, config_to_dict
from c2d.models.subnet import ScoreSubnet, SingleBackbone
from c2d.models.unet import UNet
from c2d.models.vocoder import FourierVocoder, VocoderConfig
from c2d.runtime.audio import DEFAULT_MEL, MelConfig
from c2d.runtime.errors import C2DError
from c2d.runtime.files import atomic_path
from c2d.runtime.sde import SDEConfig

FORMAT_VERSION = 1
KINDS = ("classifier", "subnet", "unet", "evaluator", "vocoder", "audio-evaluator", "student")


class CheckpointError(C2DError, RuntimeError):
    """A checkpoint file is missing, corrupt, of a newer format, or of the wrong kind."""


def atomic_torch_save(obj: dict, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch reports a full disk or a failed write as RuntimeError (inline_container.cc)
            raise OSError(
                28 if "No space" in str(exc) or "file write failed" in str(exc) else 5,
                f"cannot write the checkpoint ({str(exc).splitlines()[0][:200]})",
                str(path),
            ) from exc


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Load safely (no arbitrary unpickling) and check format and kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"corrupt or unsafe checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or "format" not in ckpt or "kind" not in ckpt:
        raise CheckpointError(f"{path} is not a c2d checkpoint (no 'format'/'kind' entries)")
    if isinstance(ckpt["format"], bool) or not isinstance(ckpt["format"], int) or ckpt["kind"] not in KINDS:
        raise CheckpointError(f"{path}: format {ckpt['format']!r} / kind {ckpt['kind']!r} is not a c2d checkpoint's (kinds: {', '.join(KINDS)})")
    if ckpt["format"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format {ckpt['format']}, newer than this c2d supports ({FORMAT_VERSION})")
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"{path} is a {ckpt['kind']!r} checkpoint, expected {kind!r}")
    return ckpt


def state_sha256(state: dict) -> str:
    """Content hash of a state dict (names and exact bytes), for tracing which classifier a subnet used."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        buf = io.BytesIO()
        torch.save(state[name].detach().cpu().contiguous(), buf)
        h.update(buf.getvalue())
    return h.hexdigest()


def inference_weights(ckpt: dict) -> dict:
    """The weights to sample or export with: the EMA if the checkpoint has one."""
    return ckpt.get("ema") or ckpt["model"]


def _rebuilds(build):
    """A checkpoint with a missing entry or a config of the wrong shape is a CheckpointError, not a KeyError."""
    import functools

    @functools.wraps(build)
    def wrapper(ckpt: dict, source: str = "checkpoint"):
        try:
            return build(ckpt, source)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, RuntimeError) as exc:
            what = f"entry {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CheckpointError(f"{source}: incomplete or damaged checkpoint ({what})") from exc

    return wrapper


def _load_state(model: torch.nn.Module, state: dict, source: str) -> torch.nn.Module:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not match the stored config: {exc}") from exc
    return model


@_rebuilds
def build_classifier(ckpt: dict, source: str = "checkpoint") -> NoiseConditionedClassifier:
    cfg = config_from_dict(ClassifierConfig, ckpt["config"])
    return _load_state(NoiseConditionedClassifier(cfg), inference_weights(ckpt), source)


@_rebuilds
def build_unet(ckpt: dict, source: str = "checkpoint") -> UNet:
    return _load_state(UNet(config_from_dict(UNetConfig, ckpt["config"])), inference_weights(ckpt), source)


@_rebuilds
def build_single_backbone(ckpt: dict, source: str = "checkpoint") -> SingleBackbone:
    """Subnet checkpoint -> frozen classifier + subnetwork, from the file alone."""
    classifier = build_classifier(ckpt["classifier"], source + " (embedded classifier)")
    subnet = ScoreSubnet(config_from_dict(SubnetConfig, ckpt["config"]), classifier.tap_channels)
    _load_state(subnet, inference_weights(ckpt), source)
    return SingleBackbone(classifier, subnet, sde_from(ckpt))


def student_recipe(ckpt: dict) -> dict:
    """A student checkpoint's distillation settings; those written before the objective (the conditioning) was a
    setting were consistency's (the digit embedding's). Other kinds all read as the same defaults."""
    return {"objective": "consistency", "conditioning": "digit", **(ckpt.get("distill") or {})}


@_rebuilds
def build_student(ckpt: dict, source: str = "checkpoint"):
    """Student checkpoint -> frozen classifier + student subnet and condition embedding, from the file alone."""
    from c2d.models.student import Student

    classifier = build_classifier(ckpt["classifier"], source + " (embedded classifier)")
    conditioning = student_recipe(ckpt)["conditioning"]
    student = Student(classifier, config_from_dict(SubnetConfig, ckpt["config"]), sde_from(ckpt), int(ckpt["n_classes"]), conditioning)
    _load_state(student.trainable(), inference_weights(ckpt), source)
    return student


@_rebuilds
def build_vocoder(ckpt: dict, source: str = "checkpoint") -> FourierVocoder:
    return _load_state(FourierVocoder(config_from_dict(VocoderConfig, ckpt["config"])), inference_weights(ckpt), source)


def sde_from(ckpt: dict) -> SDEConfig:
    return config_from_dict(SDEConfig, ckpt.get("sde", {}))


def embedded_classifier(classifier_ckpt: dict) -> dict:
    """What a subnet checkpoint stores of its frozen classifier (inference weights only)."""
    weights = inference_weights(classifier_ckpt)
    return {
        "format": FORMAT_VERSION,
        "kind": "classifier",
        "config": classifier_ckpt["config"],
        "model": weights,
        "sha256": state_sha256(weights),
    }


def release(ckpt: dict) -> dict:
    """Strip training state (raw weights, optimizer, RNG): the small file that ships or gets committed."""
    keep = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "rng", "rng_device")}
    keep["ema"] = inference_weights(ckpt)
    keep["released"] = True
    return keep


def new_checkpoint(kind: str, size: str, config, sde: SDEConfig, mel: MelConfig = DEFAULT_MEL) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return {"format": FORMAT_VERSION, "kind": kind, "size": size, "config": config_to_dict(config), "sde": config_to_dict(sde), "mel": mel.to_dict()}


def mel_from(ckpt: dict) -> MelConfig:
    """The front end the checkpoint was trained with."""
    return config_from_dict(MelConfig, ckpt.get("mel", {}))
