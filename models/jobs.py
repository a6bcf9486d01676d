"""One function per `c2d train` subcommand: from options to a written checkpoint. The CLI parses and prints; the
work, the defaults that depend on the kind and the checks between options live here, usable from Python."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from c2d.models.train import TrainConfig

Log = Callable[[str], None]


def device_for(device: str) -> str:
    """'cpu', or this process's CUDA device (torchrun sets LOCAL_RANK); ValueError without one."""
    if device != "cuda":
        return device
    import torch

    if not torch.cuda.is_available():
        raise ValueError("--device cuda given but torch sees no CUDA device")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return f"cuda:{torch.cuda.current_device()}"


def is_rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def test_accuracy_monitor(data, features):
    """The classifier's accuracy on the test split at the reported noise levels, or None without a test split."""
    import torch

    from c2d.models.data import load_features
    from c2d.models.train import classifier_monitor
    from c2d.runtime.sde import SDEConfig

    test = load_features("test", data, features_file=features)
    if len(test) == 0:
        return None
    return classifier_monitor(torch.from_numpy(test.x), torch.from_numpy(test.y), SDEConfig())


def train_network(
    kind: str,
    out: str | os.PathLike,
    cfg: TrainConfig,
    size: str = "small",
    data=None,
    features=None,
    device: str = "cpu",
    fresh: bool = False,
    init_path=None,
    precond: str = "eps",
    loss_weighting: str = "output",
    classifier_path=None,
    gradient_taps: bool = True,
    train_digits: str | None = None,
    train_fraction: float | None = None,
    log: Log = print,
) -> dict:
    """Train (or resume) the classifier, the subnet or the U-Net; returns the final checkpoint dict."""
    from c2d.models.data import describe_subset, load_features, parse_digit_list, train_subset
    from c2d.models.train import init_from, make_job, train
    from c2d.runtime.sde import SDEConfig

    device = device_for(device)
    features_train = load_features("train", data, features_file=features)
    subset = None
    if train_digits is not None or train_fraction is not None:
        digits = parse_digit_list(train_digits) if train_digits is not None else None
        features_train, subset = train_subset(features_train, digits, train_fraction, cfg.seed)
        log(f"training on {describe_subset(subset)}")
    moments = (float(features_train.x.mean()), float(features_train.x.var())) if precond != "eps" else None
    job = make_job(kind, size, SDEConfig(), classifier_path, gradient_taps, cfg.seed, precond, moments, loss_weighting)
    if subset is not None:
        job.ckpt["train_subset"] = subset
    if init_path and (fresh or not Path(out).exists()):
        init_from(job, init_path)
        log(f"starting from the weights of {init_path} (step {job.ckpt['init_from']['step']})")
    if kind == "classifier":
        job.monitor = test_accuracy_monitor(data, features)
    return train(job, features_train, cfg, out, device=device, fresh=fresh)


MONITOR_CLIPS = 4  # test recordings the student's monitor noises at 4 times and gives all 10 digits


def train_student(
    out: str | os.PathLike,
    cfg: TrainConfig,
    teacher_path,
    grid: int = 40,
    skip: int = 4,
    gamma_max: float = 5.0,
    objective: str = "consistency",
    init_path=None,
    teacher_bf16: bool = False,
    conditioning: str = "digit",
    data=None,
    features=None,
    device: str = "cpu",
    fresh: bool = False,
    log: Log = print,
) -> dict:
    """Distil the student from a preconditioned teacher subnet (models/student.py): objective "guided" (stage 1) or
    "consistency" (stage 2, from init_path: a stage-1 student of the same teacher)."""
    import torch

    from c2d.models.data import load_features
    from c2d.models.student import DistillConfig, check_same_teacher, make_student_job
    from c2d.models.train import init_from, train

    if not 1 <= skip <= grid:
        raise ValueError(f"--skip {skip} must be between 1 and --grid {grid}")
    device = device_for(device)
    test = load_features("test", data, features_file=features)
    held_out = torch.from_numpy(test.x[:MONITOR_CLIPS]) if len(test) else None
    distill = DistillConfig(objective=objective, grid=grid, skip=skip, gamma_max=gamma_max, teacher_fp32=not teacher_bf16, conditioning=conditioning)
    job = make_student_job(teacher_path, cfg.seed, distill, monitor_clips=held_out)
    start = f"{out} (resumed)" if Path(out).exists() and not fresh else "the teacher's decoder"
    if init_path and (fresh or not Path(out).exists()):
        check_same_teacher(init_path, job.ckpt)
        init_from(job, init_path)
        start = f"{init_path} (step {job.ckpt['init_from']['step']})"
    if objective == "guided":
        log(f"distilling the guided eps of {teacher_path}, gamma in [0, {gamma_max:g}], from {start}")
    else:
        log(f"consistency-distilling {teacher_path}: {grid}-point log-SNR grid, teacher steps of {skip}, gamma in [0, {gamma_max:g}], from {start}")
    return train(job, load_features("train", data, features_file=features), cfg, out, device=device, fresh=fresh)


def train_vocoder(
    out: str | os.PathLike,
    cfg: TrainConfig,
    export_teacher: Callable[[Path], object],
    bundle,
    generated: int = 1200,
    targets: str = "recordings",
    data=None,
    features=None,
    device: str = "cpu",
    fresh: bool = False,
    log: Log = print,
) -> dict:
    """Distil the Fourier vocoder from the teacher that `export_teacher(path)` writes as ONNX (HiFi-GAN V1 universal)."""
    from c2d.models.train import train
    from c2d.models.vocoder_train import distillation_set, make_vocoder_job
    from c2d.runtime.bundle import generator_sha256

    device = device_for(device)
    pairs = distillation_set(bundle, generated, export_teacher, data, features, log=log)
    teacher_data: dict = {"clips": {str(s): int((pairs.source == s).sum()) for s in sorted(set(pairs.source.tolist()))}}
    if generated:
        teacher_data["generator_sha256"] = generator_sha256(bundle)
    job = make_vocoder_job(seed=cfg.seed, data=teacher_data, targets=targets)
    return train(job, pairs.as_features(targets), cfg, out, device=device, fresh=fresh)


def train_log_mel_judge(out, steps: int, batch_size: int, lr: float, seed: int, data=None, features=None, log: Log = print) -> tuple[float, int]:
    """The log-Mel judge, written to `out`; returns (test accuracy, test clips)."""
    from c2d.models.checkpoint import atomic_torch_save
    from c2d.models.data import load_features
    from c2d.models.evaluator import classify, evaluator_checkpoint, train_evaluator

    train_split = load_features("train", data, features_file=features)
    test_split = load_features("test", data, features_file=features)
    model = train_evaluator(train_split, steps, batch_size, lr, seed, log=log)
    accuracy = float((classify(model, test_split.x)[0].argmax(1) == test_split.y).mean()) if len(test_split) else float("nan")
    atomic_torch_save(evaluator_checkpoint(model, accuracy, steps), out)
    return accuracy, len(test_split)


def train_mfcc_judge(out, steps: int, batch_size: int, lr: float, seed: int, data=None, fp32: bool = False, log: Log = print) -> tuple[float, int]:
    """The MFCC judge, written to `out`; returns (test accuracy, test recordings)."""
    from c2d.models.audio_eval import audio_evaluator_checkpoint, classify_audio, load_split_audio, train_audio_evaluator
    from c2d.models.checkpoint import atomic_torch_save
    from c2d.models.train import cpu_has_amx

    train_clips, train_digits = load_split_audio("train", data)
    test_clips, test_digits = load_split_audio("test", data)
    model = train_audio_evaluator(train_clips, train_digits, steps, batch_size, lr, seed, bf16=not fp32 and cpu_has_amx(), log=log)
    accuracy = float((classify_audio(model, test_clips)[0].argmax(1) == test_digits).mean()) if len(test_digits) else float("nan")
    atomic_torch_save(audio_evaluator_checkpoint(model, accuracy, steps), out)
    return accuracy, len(test_digits)
