"""Training loop for the three networks (reads top to bottom, nanoGPT style).

c2d train classifier  -> noise-conditioned classifier, cross-entropy on x_t at random t
c2d train subnet      -> score subnetwork on the frozen classifier, DSM only
c2d train unet        -> U-Net baseline, DSM
Scales out with torchrun (torch.distributed DDP; gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from c2d.models.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    build_classifier,
    embedded_classifier,
    inference_weights,
    load_checkpoint,
    new_checkpoint,
    state_sha256,
    student_recipe,
)
from c2d.models.classifier import NoiseConditionedClassifier, noisy_accuracy
from c2d.models.config import SIZES, config_to_dict
from c2d.models.data import Features, describe_subset
from c2d.models.precond import WEIGHTINGS, Preconditioned, loss_weight
from c2d.models.sde import alpha_sigma, dsm_loss, perturb, sample_t
from c2d.models.subnet import ScoreSubnet, SingleBackbone
from c2d.models.unet import UNet
from c2d.runtime.sde import SDEConfig


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000  # optimizer steps in total (a resumed run continues up to this)
    batch_size: int = 32  # per process
    lr: float = 3e-4  # peak learning rate (Adam), linear warm-up then cosine decay to 10 %
    warmup: int = 200  # warm-up steps
    ema_decay: float = 0.999  # EMA of the trained weights; the EMA is what samples and exports use
    grad_clip: float = 1.0  # global gradient-norm clip
    seed: int = 0
    bf16: bool = True  # autocast to bfloat16 (AMX on CPU, tensor cores on CUDA); loss and optimizer in fp32
    channels_last: bool = False  # NHWC memory format for the model and the batches (same maths, faster convs on CPU)
    ckpt_every: int = 500  # write the resumable checkpoint every this many steps (and at the end)
    log_every: int = 50  # append a JSON line to <out>.log every this many steps
    monitor_every: int = 500  # run the job's monitor (if any) on the EMA weights every this many steps, into the log
    time_limit_s: float | None = None  # wall-clock budget: after 20 steps `steps` shrinks to what fits, so the
    # learning-rate schedule still completes; the checkpoint records the steps actually run


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX (bf16 tiles): there bf16 autocast trains convolutions about 3x faster than fp32; on
    other CPUs it is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " amx_bf16" in flags


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def classifier_loss(sde: SDEConfig) -> LossFn:
    """Cross-entropy of the classifier on x_t, t ~ U[t_min, 1]."""

    def loss(model, x0, y, gen):
        t = sample_t(len(x0), sde, gen, x0.device)
        x_t = perturb(x0, t, sde, torch.randn(x0.shape, generator=gen, device=x0.device))
        return F.cross_entropy(model(x_t, t).float(), y)

    return loss


def score_loss(sde: SDEConfig, output: str = "eps", data_var: float = 1.0, weighting: str = "output") -> LossFn:
    """Denoising score matching in noise-prediction form; with output "edm" and weighting "output" each example's
    squared eps error is weighted by 1 / c_out^2, which makes the loss unit-weighted on the network's raw output;
    weighting "eps" keeps it uniform on eps (models/precond.py)."""

    def loss(model, x0, y, gen):
        t = sample_t(len(x0), sde, gen, x0.device)
        noise = torch.randn(x0.shape, generator=gen, device=x0.device)
        eps = model(perturb(x0, t, sde, noise), t)
        weight = loss_weight(output, *alpha_sigma(t, sde), data_var, weighting)
        if weight is None:
            return dsm_loss(eps, noise)
        return (weight * (eps.float() - noise).pow(2).mean(dim=(1, 2, 3))).mean()

    return loss


@dataclass
class Job:
    """What differs between the three trainings: the module to run, the part that learns, the loss."""

    forward_module: nn.Module  # called as module(x_t, t)
    trainable: nn.Module  # its state dict is what the checkpoint stores
    loss: LossFn
    ckpt: dict  # checkpoint header (kind, size, config, sde, ...)
    monitor: Callable[[nn.Module], dict] | None = None  # EMA copy of `trainable` -> figures for the log (e.g. test accuracy)


def make_job(
    kind: str,
    size: str,
    sde: SDEConfig,
    classifier_path: str | None = None,
    gradient_taps: bool = True,
    seed: int = 0,
    output: str = "eps",
    moments: tuple[float, float] | None = None,
    loss_weighting: str = "output",
) -> Job:
    """Build the networks for one training (initialised from `seed`) and its checkpoint header. output: how the
    score network's raw output becomes eps ("eps", "gaussian-skip", "edm"; models/precond.py), which needs the
    training data's (mean, variance) as `moments` unless it is "eps". loss_weighting: what the score loss is uniform on
    ("output" or "eps"; the same for output "eps"); a non-default choice is recorded in the header, and resuming
    checks it."""
    sizes = SIZES[size]
    torch.manual_seed(seed)
    if output != "eps" and moments is None:
        raise ValueError(f"output {output!r} needs the training data's mean and variance")
    if loss_weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {loss_weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    mean, var = (float(moments[0]), float(moments[1])) if moments is not None else (0.0, 1.0)
    if kind == "classifier":
        model = NoiseConditionedClassifier(sizes.classifier)
        return Job(model, model, classifier_loss(sde), new_checkpoint("classifier", size, sizes.classifier, sde))
    if kind == "unet":
        cfg = dataclasses.replace(sizes.unet, output=output, data_mean=mean, data_var=var) if output != "eps" else sizes.unet
        model = UNet(cfg)
        forward = Preconditioned(model, sde, output, mean, var) if output != "eps" else model
        header = _with_weighting(new_checkpoint("unet", size, cfg, sde), output, loss_weighting)
        return Job(forward, model, score_loss(sde, output, var, loss_weighting), header)
    if kind == "subnet":
        if classifier_path is None:
            raise ValueError("training the subnet needs the frozen classifier's checkpoint (--classifier)")
        cls_ckpt = load_checkpoint(classifier_path, "classifier")
        classifier = build_classifier(cls_ckpt, str(classifier_path))
        cfg = dataclasses.replace(sizes.subnet, use_gradient_taps=gradient_taps)
        if output == "gaussian-skip":  # stored as the flag older checkpoints carry
            cfg = dataclasses.replace(cfg, gaussian_skip=True, data_mean=mean, data_var=var)
        elif output != "eps":
            cfg = dataclasses.replace(cfg, output=output, data_mean=mean, data_var=var)
        subnet = ScoreSubnet(cfg, classifier.tap_channels)
        header = _with_weighting(new_checkpoint("subnet", size, cfg, sde), output, loss_weighting)
        header["classifier"] = embedded_classifier(cls_ckpt)
        return Job(SingleBackbone(classifier, subnet, sde), subnet, score_loss(sde, output, var, loss_weighting), header)
    raise ValueError(f"unknown model kind {kind!r}; choose classifier, subnet or unet")


def _with_weighting(header: dict, output: str, weighting: str) -> dict:
    """Record a loss weighting that differs from the default one (for output "eps" the two are the same loss)."""
    if output != "eps" and weighting != "output":
        header["loss_weighting"] = weighting
    return header


def init_from(job: Job, path: str | os.PathLike) -> None:
    """Start the job's trainable network from another checkpoint's inference weights (same kind and config); the
    optimizer starts fresh. The header records where the weights came from, and how far that run had trained."""
    src = load_checkpoint(path, job.ckpt["kind"])
    if src.get("config") != job.ckpt["config"]:
        raise CheckpointError(f"{path} has another {job.ckpt['kind']} config than --size asks for; it cannot initialise this run")
    weights = inference_weights(src)
    try:
        job.trainable.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the config: {exc}") from exc
    job.ckpt["init_from"] = {
        "file": Path(path).name,
        "sha256": state_sha256(weights),
        "step": int(src.get("step", 0)),
        "batch_size": int(src.get("train", {}).get("batch_size", 0)),
    }


def classifier_monitor(x0: torch.Tensor, y: torch.Tensor, sde: SDEConfig, draws: int = 2) -> Callable[[nn.Module], dict]:
    """Accuracy on held-out clips x0 [N, 1, 80, 88] at the reported diffusion times, fixed noise draws."""

    def monitor(classifier: nn.Module) -> dict:
        acc = noisy_accuracy(classifier, x0, y, sde, draws=draws)
        return {"accuracy": {f"{t:g}": round(a, 4) for t, a in acc.items()}}

    return monitor


def run_monitor(job: Job, ema: dict) -> dict:
    """The job's monitor on a float32 copy of the trainable network holding the EMA weights (what ships)."""
    module = copy.deepcopy(job.trainable).float()
    module.load_state_dict(ema)
    return job.monitor(module)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def update_ema(ema: dict, module: nn.Module, decay: float) -> None:
    for name, value in module.state_dict().items():
        if value.dtype.is_floating_point:
            ema[name].lerp_(value, 1.0 - decay)
        else:
            ema[name].copy_(value)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _dist_info()


def train(
    job: Job, data: Features, cfg: TrainConfig, out: str | os.PathLike, device: str = "cpu", fresh: bool = False, progress: bool = True
) -> dict:
    """Train job.trainable on data; write a resumable checkpoint to `out`. Returns the final checkpoint."""
    if len(data) == 0:
        raise ValueError("no training examples: the data split is empty")
    out = Path(out)
    dev = torch.device(device)
    rank, world = init_distributed(dev)
    job.forward_module.to(dev)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    job.forward_module.to(memory_format=memory_format)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    params = [p for p in job.trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    ema = {k: v.detach().clone() for k, v in job.trainable.state_dict().items()}
    gen = torch.Generator(device=dev).manual_seed(cfg.seed * 9973 + rank)
    step, history = 0, []
    if out.exists() and not fresh:
        step, history = _resume(out, job, optimizer, ema, gen, dev)
    model = job.forward_module
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    x_all = torch.from_numpy(data.x).to(dev).contiguous(memory_format=memory_format)  # [N, 1, 80, 88]
    y_all = torch.from_numpy(data.y).to(dev)
    model.train()
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not progress or rank != 0,
        desc=job.ckpt["kind"],
        dynamic_ncols=True,
        mininterval=0.2 if sys.stderr.isatty() else 30.0,
    )
    smooth, start, first_step, max_steps = None, time.time(), step, cfg.steps
    while step < cfg.steps:
        torch.manual_seed((cfg.seed * 1_000_003 + step) * 97 + rank)  # dropout masks: reproducible across resumes
        idx = torch.randint(len(x_all), (cfg.batch_size,), generator=gen, device=dev)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        with autocast:
            loss = job.loss(model, x_all[idx], y_all[idx], gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        step += 1
        update_ema(ema, job.trainable, min(cfg.ema_decay, (1 + step) / (10 + step)))
        if step % 10 == 0 or step == first_step + 1:  # .item() syncs a GPU: read the loss now and then
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step}; the last checkpoint in {out} is intact")
            smooth = value if smooth is None else 0.8 * smooth + 0.2 * value
            bar.set_postfix(loss=f"{smooth:.4f}")
        if cfg.time_limit_s and (step - first_step) % 200 == 20:
            cfg = _fit_to_budget(cfg, max_steps, step, first_step, time.time() - start, world)
            bar.total = cfg.steps
        done = step >= cfg.steps
        bar.update(1)
        if rank == 0 and (step % cfg.log_every == 0 or done):
            record = {"step": step, "loss": smooth, "lr": lr_at(step - 1, cfg), "elapsed_s": round(time.time() - start, 1)}
            if job.monitor is not None and (step % cfg.monitor_every == 0 or done):
                record.update(run_monitor(job, ema))
            _log(out, record)
        if rank == 0 and (step % cfg.ckpt_every == 0 or done):
            runs = history + [_session(first_step, step, start, world, dev)]
            atomic_torch_save(_checkpoint(job, optimizer, ema, gen, step, cfg, world, runs), out)
    bar.close()
    if world > 1:
        dist.barrier()
    return _checkpoint(job, optimizer, ema, gen, step, cfg, world, history + [_session(first_step, step, start, world, dev)])


def _session(first_step: int, step: int, start: float, world: int, dev: torch.device) -> dict:
    """What one training process did: its command, machine, steps and wall time (a checkpoint keeps one per resume,
    so the file says how it was made)."""
    from c2d.runtime.machine import cpu_model, isa_features

    return {
        "command": shlex.join(["c2d" if Path(sys.argv[0]).name in ("c2d", "__main__.py") else sys.argv[0], *sys.argv[1:]]),
        "cpu": cpu_model(),
        "isa": isa_features(),
        "threads": torch.get_num_threads(),
        "device": dev.type,
        "world_size": world,
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime(start)),
        "steps": [first_step, step],
        "seconds": round(time.time() - start, 1),
    }


def _fit_to_budget(cfg: TrainConfig, max_steps: int, step: int, first_step: int, elapsed: float, world: int) -> TrainConfig:
    """Set cfg.steps to what the remaining time budget allows at the measured rate, at most max_steps."""
    rate = (step - first_step) / max(elapsed, 1e-6)
    fits = step + int(rate * max(cfg.time_limit_s - elapsed, 0.0))
    if world > 1:
        fits_t = torch.tensor([fits], dtype=torch.long)
        dist.all_reduce(fits_t, op=dist.ReduceOp.MIN)
        fits = int(fits_t.item())
    return dataclasses.replace(cfg, steps=max(step, min(max_steps, fits)))


def _checkpoint(job: Job, optimizer, ema: dict, gen: torch.Generator, step: int, cfg: TrainConfig, world: int, runs: list[dict]) -> dict:
    ckpt = dict(job.ckpt)
    ckpt.update(
        model={k: v.detach().cpu() for k, v in job.trainable.state_dict().items()},
        ema={k: v.detach().cpu() for k, v in ema.items()},
        optimizer=optimizer.state_dict(),
        rng=gen.get_state().cpu(),
        rng_device=gen.device.type,
        step=step,
        train=config_to_dict(cfg),
        world_size=world,
        runs=runs,
    )
    return ckpt


def _resume(out: Path, job: Job, optimizer, ema: dict, gen: torch.Generator, dev: torch.device) -> tuple[int, list[dict]]:
    """Load the resumable state of `out` into the job; (its step, the record of the runs that made it)."""
    ckpt = load_checkpoint(out, job.ckpt["kind"])
    if "optimizer" not in ckpt:
        raise CheckpointError(f"{out} is a released checkpoint (no optimizer state); it cannot be resumed, use --fresh")
    if ckpt["config"] != job.ckpt["config"]:
        raise CheckpointError(f"{out} was trained with another config; use --fresh or another --out")
    if ckpt.get("targets") != job.ckpt.get("targets"):  # the vocoder's recipe: resuming must not switch it silently
        raise CheckpointError(f"{out} was trained with --targets {ckpt.get('targets')}, not {job.ckpt.get('targets')}; use --fresh or another --out")
    if ckpt.get("teacher") != job.ckpt.get("teacher") or student_recipe(ckpt) != student_recipe(job.ckpt):  # a student's recipe
        raise CheckpointError(f"{out} was distilled from another teacher or with other settings; use --fresh or another --out")
    if ckpt.get("loss_weighting", "output") != job.ckpt.get("loss_weighting", "output"):
        raise CheckpointError(
            f"{out} was trained with --loss-weighting {ckpt.get('loss_weighting', 'output')}, not "
            f"{job.ckpt.get('loss_weighting', 'output')}; use --fresh or another --out"
        )
    if ckpt.get("train_subset") != job.ckpt.get("train_subset"):
        raise CheckpointError(
            f"{out} was trained on another subset of the data ({describe_subset(ckpt.get('train_subset'))}, now "
            f"{describe_subset(job.ckpt.get('train_subset'))}); use --fresh or another --out"
        )
    if "init_from" in ckpt:  # where the first run's weights came from stays recorded, with or without --init-from now
        job.ckpt.setdefault("init_from", ckpt["init_from"])
    job.trainable.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    for k, v in ckpt["ema"].items():
        ema[k].copy_(v)
    if ckpt.get("rng_device", "cpu") == dev.type:  # generator states are device-specific; elsewhere keep the seed
        gen.set_state(ckpt["rng"])
    return int(ckpt["step"]), list(ckpt.get("runs", []))


def _log(out: Path, record: dict) -> None:
    with open(out.with_suffix(out.suffix + ".log"), "a") as f:
        f.write(json.dumps(record) + "\n")
