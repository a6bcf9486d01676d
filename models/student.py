"""The few-step student (issue 30): the score subnet without gradient taps, told the digit and the guidance scale,
distilled from the guided teacher so that sampling needs no backward pass through the classifier.

Student: eps_S(x_t, t, y, gamma) = EDM-preconditioned output of a no-gradient-tap subnet on the frozen classifier's
forward taps, with embeddings of y and gamma added to the time embedding. It outputs eps like every generator here,
so the exported graph keeps the runtime's contract; its consistency function is the data prediction
f(x_t, t) = (x_t - sigma_t eps_S) / alpha_t.

Two objectives, run as two stages (the second initialised from the first with --init-from):
- "guided" (guidance distillation, stage 1 of Meng et al. 2023): eps_S(x_t, t, y, gamma) regresses on the guided
  teacher's eps at the same point, t ~ U[t_min, 1], unit-weighted on the raw output like the teacher's own loss.
  This teaches the digit and the guidance to a network that never sees a gradient; any sampler can run the result.
- "consistency" (stage 2): consistency distillation, below. Started from a student that is already a guided denoiser
  (LCM's recipe: the consistency model starts as the teacher), it only has to learn to jump. Started from the
  teacher's decoder alone, as the first run did, the digit reached the samples too slowly to learn (docs/student.md).

Consistency distillation (Song et al. 2023; LCM's skipping steps, Luo et al. 2023), one training example:
  x_hi = alpha_hi x_0 + sigma_hi z at t_hi = ts[n + k]; the teacher's guided DDIM (probability-flow ODE) step takes it
  to x_lo at t_lo = ts[n]; the loss is the pseudo-Huber distance between f_S(x_hi, t_hi) and the target network's
  f(x_lo, t_lo), computed by the student itself without gradient (a stop-gradient target, as improved consistency
  training uses, Song & Dhariwal 2023, instead of an EMA copy; the EMA is kept only for the weights that ship).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch
from torch import nn

from c2d.models.classifier import NoiseConditionedClassifier, freeze
from c2d.models.config import SubnetConfig
from c2d.models.nn import TimeEmbedding
from c2d.models.precond import edm_data_prediction, eps_from_output, loss_weight
from c2d.models.sde import alpha_sigma, perturb, sample_t
from c2d.models.subnet import ScoreSubnet, SingleBackbone
from c2d.runtime.samplers import logsnr_schedule
from c2d.runtime.sde import SDEConfig, log_alpha

GAMMA_SCALE = 1 / 10  # gamma enters the embedding as gamma / 10: the sinusoid's 1000 t covers gamma in [0, 10]
CONDITIONINGS = ("digit", "seed")  # how the digit reaches the student: an embedding only, or also the guidance seed


def student_config(teacher: SubnetConfig) -> SubnetConfig:
    """The teacher's subnet without gradient taps, with EDM output scaling on the teacher's data moments."""
    return dataclasses.replace(teacher, use_gradient_taps=False, gaussian_skip=False, output="edm")


class Condition(nn.Module):
    """Digit and guidance scale -> [B, time_dim], added to the time embedding. Zero at initialisation, so a student
    initialised from the teacher starts as the teacher's decoder."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        self.digit = nn.Linear(n_classes, dim, bias=False)  # one-hot y, as the graph's y input
        self.gamma = TimeEmbedding(dim)
        nn.init.zeros_(self.digit.weight)
        nn.init.zeros_(self.gamma.mlp[-1].weight)
        nn.init.zeros_(self.gamma.mlp[-1].bias)

    def forward(self, y_onehot: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        return self.digit(y_onehot.to(self.digit.weight.dtype)) + self.gamma(gamma * GAMMA_SCALE)


class GuidanceSeed(nn.Module):
    """Where the teacher's guidance gradient starts, computed from the classifier's forward pass alone.

    The classifier's head is GroupNorm, SiLU, mean pool, linear (W [K, C]). So, in closed form,
      d log p(y | x) / d pooled = (onehot(y) - softmax(logits)) W                    [B, C]
      d log p(y | x) / d GN-output at (h, w) = that * silu'(a(h, w)) / (h w)         [B, C, h, w]
    with a = GN(last tap). The teacher's guided eps moves by gamma sigma_t times the backward pass of the second through
    the encoder; the student gets gamma sigma_t times both (the 1 / (h w) left out): the vector in its condition
    embedding, the map added at its decoder's bottleneck. The digit then reaches the student as the direction the
    teacher pushes in, and as how hard (the push vanishes where the classifier is already sure). Without sigma_t the
    seed was as loud at low noise as at high, and the student's eps at t = 0.1 strayed from the teacher's
    (docs/student.md). Zero-initialised: a new seed changes nothing until it learns.
    """

    def __init__(self, classifier: NoiseConditionedClassifier, time_dim: int, width: int):
        super().__init__()
        channels = classifier.head.in_features
        self.vector = nn.Linear(channels, time_dim)
        self.map = nn.Conv2d(channels, width, 1)
        for layer in (self.vector, self.map):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, classifier: NoiseConditionedClassifier, logits, last_tap, y_onehot, gamma, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        """(condition term [B, time_dim], bottleneck term [B, width, h, w]); gamma, sigma_t [B]; the classifier is
        passed, not owned."""
        vector, spatial = guidance_seed(classifier, logits, last_tap, y_onehot)
        scale = gamma.float() * sigma.float()  # [B]
        dtype = self.vector.weight.dtype
        return self.vector((vector * scale[:, None]).to(dtype)), self.map((spatial * scale[:, None, None, None]).to(dtype))


def seed_sigma(t: torch.Tensor, sde: SDEConfig) -> torch.Tensor:
    """sigma_t [B] as sqrt(1 - alpha_t^2): ONNX has no Expm1, and training and the exported graph must compute the
    seed's scale alike (its float32 error near t_min, about 1e-4, does not matter for a conditioning input)."""
    return torch.sqrt(torch.clamp(1.0 - torch.exp(2.0 * log_alpha(t.float(), sde)), min=0.0))


def guidance_seed(classifier: NoiseConditionedClassifier, logits: torch.Tensor, last_tap: torch.Tensor, y_onehot: torch.Tensor):
    """(d log p(y | x) / d pooled [B, C], h w times d log p(y | x) / d GN-output [B, C, h, w]), float32, from the
    forward pass: logits [B, K] and the classifier's last tap [B, C, h, w]."""
    probs = logits.float().softmax(dim=1)
    vector = (y_onehot.float() - probs) @ classifier.head.weight.float()  # [B, K] x [K, C] -> [B, C]
    a = classifier.head_norm(last_tap).float()
    s = torch.sigmoid(a)
    return vector, vector[:, :, None, None] * (s * (1 + a * (1 - s)))  # silu'(a) = s (1 + a (1 - s))


class Student(nn.Module):
    """Frozen classifier (forward taps only) + student subnet: eps(x_t, t, y, gamma) [B, 1, H, W].

    conditioning "digit": the digit and gamma reach the subnet through the condition embedding only; "seed": also
    through the guidance seed (GuidanceSeed)."""

    def __init__(self, classifier: NoiseConditionedClassifier, cfg: SubnetConfig, sde: SDEConfig, n_classes: int, conditioning: str = "digit"):
        super().__init__()
        if cfg.use_gradient_taps or cfg.output != "edm":
            raise ValueError("the student reads forward taps only and predicts eps with EDM output scaling")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown student conditioning {conditioning!r}; choose one of {', '.join(CONDITIONINGS)}")
        self.classifier = freeze(classifier)
        self.subnet = ScoreSubnet(cfg, classifier.tap_channels)
        self.condition = Condition(n_classes, cfg.time_dim)
        self.conditioning = conditioning
        self.seed = GuidanceSeed(classifier, cfg.time_dim, cfg.base_width * cfg.width_mults[-1]) if conditioning == "seed" else None
        self.sde = sde

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()
        return self

    def trainable(self) -> nn.Module:
        """What learns and what the checkpoint stores: the subnet, the condition embedding and the guidance seed's
        projections if any (keys subnet.*, condition.*, seed.*), not the frozen classifier."""
        parts = {"subnet": self.subnet, "condition": self.condition}
        return nn.ModuleDict(parts if self.seed is None else {**parts, "seed": self.seed})

    def raw_and_logits(self, x: torch.Tensor, t: torch.Tensor, y_onehot: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():  # the classifier is frozen and no gradient is taken through it: no backward pass
            logits, taps = self.classifier.forward_with_taps(x, t)
        cond, bottleneck = self.condition(y_onehot, gamma), None
        if self.seed is not None:
            seed_cond, bottleneck = self.seed(self.classifier, logits, taps[-1], y_onehot, gamma, seed_sigma(t, self.sde))
            cond = cond + seed_cond
        return self.subnet(taps, None, t, cond, bottleneck), logits

    def raw(self, x: torch.Tensor, t: torch.Tensor, y_onehot: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        return self.raw_and_logits(x, t, y_onehot, gamma)[0]

    def guided(self, x, t, y_onehot, gamma) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps [B, 1, H, W], logits [B, K]) like SingleBackbone.guided: the guidance is distilled into eps."""
        raw, logits = self.raw_and_logits(x, t, y_onehot, gamma)
        cfg = self.subnet.cfg
        return eps_from_output("edm", raw, x, *alpha_sigma(t, self.sde), cfg.data_mean, cfg.data_var), logits.float()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y_onehot: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        cfg = self.subnet.cfg
        return eps_from_output("edm", self.raw(x, t, y_onehot, gamma), x, *alpha_sigma(t, self.sde), cfg.data_mean, cfg.data_var)

    def data_prediction(self, x: torch.Tensor, t: torch.Tensor, y_onehot: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """The consistency function f(x_t, t) = x_0 estimate [B, 1, H, W], computed stably in float32."""
        cfg = self.subnet.cfg
        raw = self.raw(x, t, y_onehot, gamma).float()
        return edm_data_prediction(raw, x.float(), *alpha_sigma(t, self.sde), cfg.data_mean, cfg.data_var)


def init_from_teacher(student: Student, teacher: SingleBackbone) -> list[str]:
    """Copy every subnet weight whose name and shape the teacher shares (the decoder, the forward-tap projections,
    the time embedding); the gradient-tap fusions have no counterpart. Returns the names copied."""
    theirs = teacher.subnet.state_dict()
    mine = student.subnet.state_dict()
    copied = [k for k, v in mine.items() if k in theirs and theirs[k].shape == v.shape]
    student.subnet.load_state_dict({**mine, **{k: theirs[k] for k in copied}})
    return copied


def data_prediction(eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor, sde: SDEConfig) -> torch.Tensor:
    """x_0 = (x_t - sigma_t eps) / alpha_t, [B, 1, H, W]: the consistency function of an eps network."""
    alpha, sigma = alpha_sigma(t, sde)
    return (x - sigma.view(-1, 1, 1, 1) * eps) / alpha.view(-1, 1, 1, 1)


def ddim_step(eps: torch.Tensor, x: torch.Tensor, t_hi: torch.Tensor, t_lo: torch.Tensor, sde: SDEConfig) -> torch.Tensor:
    """One probability-flow (DDIM, eta 0) step from t_hi to t_lo [B] with the given eps."""
    x0 = data_prediction(eps, x, t_hi, sde)
    alpha_lo, sigma_lo = alpha_sigma(t_lo, sde)
    return alpha_lo.view(-1, 1, 1, 1) * x0 + sigma_lo.view(-1, 1, 1, 1) * eps


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float = 0.03) -> torch.Tensor:
    """Mean over the batch of mean_i (sqrt((a_i - b_i)^2 + c^2) - c): L2 near 0, L1 for outliers (iCT, Song 2023)."""
    d = (a.float() - b.float()).pow(2)
    return (torch.sqrt(d + c * c) - c).mean()


OBJECTIVES = ("guided", "consistency")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    objective: str = "consistency"  # OBJECTIVES; "guided" ignores grid, skip and huber_c
    grid: int = 40  # log-SNR grid of the teacher's ODE (t = 1 ... t_min, grid + 1 points)
    skip: int = 4  # grid intervals one teacher step spans (LCM's skipping step)
    gamma_max: float = 5.0  # guidance scales drawn uniformly from [0, gamma_max]
    huber_c: float = 0.03  # pseudo-Huber constant on the normalised log-Mel
    conditioning: str = "digit"  # the student's CONDITIONINGS (an architecture choice, kept with the recipe)
    teacher_fp32: bool = True  # the teacher's step outside bf16 autocast: its ODE step amplifies eps errors


def draw_condition(y: torch.Tensor, n_classes: int, cfg: DistillConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-hot digits [B, K], guidance scales [B] ~ U[0, gamma_max]) for a batch's labels y [B]."""
    gamma = cfg.gamma_max * torch.rand(len(y), generator=gen, device=y.device)
    return torch.nn.functional.one_hot(y, n_classes).float(), gamma


@torch.no_grad()
def teacher_eps(teacher: SingleBackbone, x: torch.Tensor, t: torch.Tensor, y1: torch.Tensor, gamma: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    """The guided teacher's eps [B, 1, H, W] in float32; computed outside bf16 autocast unless cfg says otherwise."""
    fp32 = torch.autocast(x.device.type, enabled=False) if cfg.teacher_fp32 else contextlib.nullcontext()
    with fp32:
        eps, _ = teacher.guided(x, t, y1, gamma)
    return eps.float()


def guided_distillation_loss(teacher: SingleBackbone, sde: SDEConfig, n_classes: int, cfg: DistillConfig = DistillConfig()):
    """Stage 1, as models.train's LossFn: the student's eps against the guided teacher's at x_t, t ~ U[t_min, 1],
    gamma ~ U[0, gamma_max], each example weighted by 1 / c_out^2 (unit weight on the raw output)."""

    def loss(student: Student, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        t = sample_t(len(x0), sde, gen, x0.device)
        y1, gamma = draw_condition(y, n_classes, cfg, gen)
        x_t = perturb(x0.float(), t, sde, torch.randn(x0.shape, generator=gen, device=x0.device))
        eps_teacher = teacher_eps(teacher, x_t, t, y1, gamma, cfg)
        weight = loss_weight("edm", *alpha_sigma(t, sde), student.subnet.cfg.data_var)
        return (weight * (student(x_t, t, y1, gamma).float() - eps_teacher).pow(2).mean(dim=(1, 2, 3))).mean()

    return loss


def distillation_loss(teacher: SingleBackbone, sde: SDEConfig, n_classes: int, cfg: DistillConfig = DistillConfig()):
    """The training loss of cfg.objective, as models.train's LossFn (student, x_0, y, generator)."""
    if cfg.objective == "guided":
        return guided_distillation_loss(teacher, sde, n_classes, cfg)
    if cfg.objective != "consistency":
        raise ValueError(f"unknown distillation objective {cfg.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    ts = torch.as_tensor(logsnr_schedule(cfg.grid, sde), dtype=torch.float32)  # [grid + 1], from 1 down to t_min

    def loss(student: Student, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = torch.randint(0, cfg.grid - cfg.skip + 1, (len(x0),), generator=gen, device=x0.device)
        t_hi, t_lo = ts.to(x0.device)[n], ts.to(x0.device)[n + cfg.skip]
        y1, gamma = draw_condition(y, n_classes, cfg, gen)
        x_hi = perturb(x0.float(), t_hi, sde, torch.randn(x0.shape, generator=gen, device=x0.device))
        x_lo = ddim_step(teacher_eps(teacher, x_hi, t_hi, y1, gamma, cfg), x_hi, t_hi, t_lo, sde)
        with torch.no_grad():
            target = student.data_prediction(x_lo, t_lo, y1, gamma)
        return pseudo_huber(student.data_prediction(x_hi, t_hi, y1, gamma), target, cfg.huber_c)

    return loss


def make_student_job(teacher_path, seed: int = 0, distill: DistillConfig = DistillConfig(), monitor_clips: torch.Tensor | None = None):
    """models.train's Job for `c2d train student`: the student initialised from the teacher's shared weights, the
    loss of distill.objective, a checkpoint header naming the teacher and embedding its classifier, and with
    monitor_clips (held-out x_0 [N, 1, H, W]) the distillation monitor."""
    from c2d.models.checkpoint import build_single_backbone, inference_weights, load_checkpoint, new_checkpoint, state_sha256
    from c2d.models.config import config_to_dict
    from c2d.models.train import Job

    teacher_ckpt = load_checkpoint(teacher_path, "subnet")
    teacher = build_single_backbone(teacher_ckpt, str(teacher_path))
    if teacher.subnet.cfg.output_kind == "eps":
        raise ValueError(f"{teacher_path}: the teacher's probability-flow ODE must work; train it with --precond edm")
    freeze(teacher)
    torch.manual_seed(seed)
    n_classes = int(teacher.classifier.cfg.n_classes)
    student = Student(teacher.classifier, student_config(teacher.subnet.cfg), teacher.sde, n_classes, distill.conditioning)
    init_from_teacher(student, teacher)
    header = new_checkpoint("student", teacher_ckpt["size"], student.subnet.cfg, teacher.sde)
    header.update(
        classifier=teacher_ckpt["classifier"],
        n_classes=n_classes,
        teacher={"file": Path(teacher_path).name, "sha256": state_sha256(inference_weights(teacher_ckpt))},
        distill=config_to_dict(distill),
    )
    monitor = None if monitor_clips is None else distillation_monitor(teacher, student, monitor_clips)
    return Job(student, student.trainable(), distillation_loss(teacher, teacher.sde, n_classes, distill), header, monitor)


def check_same_teacher(path, job_header: dict) -> None:
    """--init-from for a student: the earlier stage must have been distilled from the same teacher, and have the same
    conditioning (its weights then fit)."""
    from c2d.models.checkpoint import CheckpointError, load_checkpoint, student_recipe

    src = load_checkpoint(path, "student")
    if (src.get("teacher") or {}).get("sha256") != job_header["teacher"]["sha256"]:
        raise CheckpointError(f"{path} was distilled from another teacher than --teacher; --init-from needs a student of the same teacher")
    theirs, ours = (student_recipe(header)["conditioning"] for header in (src, job_header))
    if theirs != ours:
        raise CheckpointError(f"{path} is a student with --conditioning {theirs}, not {ours}; pass --conditioning {theirs}")


MONITOR_TIMES = (0.9, 0.6, 0.3, 0.1)


def distillation_monitor(teacher: SingleBackbone, student: Student, x0: torch.Tensor, gamma: float = 4.5, seed: int = 0):
    """models.train's monitor for a student: on held-out clips x0 [N, 1, H, W], each noised once per time in
    MONITOR_TIMES and given every digit, how close the student's eps is to the guided teacher's. Per time:
    eps_error, the rms of eps_S - eps_T over the teacher's rms; digit_corr, the correlation of the digit-dependent parts
    (each eps minus its mean over the digits at the same x_t): 1 when the student moves with the digit as the teacher
    does, 0 when it ignores the digit. The teacher's side is computed once, here."""
    n_classes = student.condition.digit.in_features
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for t_value in MONITOR_TIMES:
        t = torch.full((len(x0) * n_classes,), t_value)
        noise = torch.randn(x0.shape, generator=gen).repeat_interleave(n_classes, 0)
        x_t = perturb(x0.float().repeat_interleave(n_classes, 0), t, student.sde, noise)  # [N * K, 1, H, W], digits vary fastest
        y1 = torch.eye(n_classes).repeat(len(x0), 1)
        g = torch.full_like(t, gamma)
        eps_teacher, _ = teacher.guided(x_t, t, y1, g)
        cases.append((t_value, x_t, t, y1, g, eps_teacher.detach().float()))

    def digit_part(eps: torch.Tensor) -> torch.Tensor:
        per_clip = eps.view(-1, n_classes, *eps.shape[1:])
        return per_clip - per_clip.mean(dim=1, keepdim=True)

    def monitor(trainable: nn.Module) -> dict:
        probe = Student(student.classifier, student.subnet.cfg, student.sde, n_classes, student.conditioning)
        for name, module in trainable.items():  # the weights being trained (or their EMA), not copies
            setattr(probe, name, module)
        probe.eval()
        error, corr = {}, {}
        with torch.no_grad():
            for t_value, x_t, t, y1, g, eps_teacher in cases:
                eps = probe(x_t, t, y1, g).float()
                error[f"{t_value:g}"] = round(float((eps - eps_teacher).norm() / eps_teacher.norm()), 4)
                a, b = digit_part(eps), digit_part(eps_teacher)
                corr[f"{t_value:g}"] = round(float((a * b).sum() / (a.norm() * b.norm() + 1e-12)), 4)
        return {"eps_error": error, "digit_corr": corr}

    return monitor
