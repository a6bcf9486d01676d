"""The independent evaluation classifier and the paper's sample-quality metrics.

The evaluator is deliberately unlike the generator's backbone: a 1-D time-delay network over clean log-Mels
(mel bands as channels, BatchNorm, ReLU, dilated convolutions, mean+std pooling), not a noise-conditioned 2-D
U-Net encoder. Its 128-d penultimate activations are the FID embedding; its softmax gives IS, mIS, AM and
class accuracy. Trained on the training split only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from c2d.models.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint
from c2d.models.config import config_from_dict, config_to_dict
from c2d.models.data import Features

EMBED_DIM = 128


@dataclass(frozen=True)
class EvaluatorConfig:
    n_mels: int = 80  # input channels
    width: int = 128  # conv channels
    embed_dim: int = EMBED_DIM  # penultimate (FID) dimension
    n_classes: int = 10


class EvalClassifier(nn.Module):
    """x [B, 1, n_mels, T] in [-1, 1] -> (logits [B, K], embedding [B, embed_dim])."""

    def __init__(self, cfg: EvaluatorConfig = EvaluatorConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        layers, c = [], cfg.n_mels
        for kernel, dilation in ((5, 1), (3, 2), (3, 3), (1, 1)):
            layers += [nn.Conv1d(c, w, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2), nn.BatchNorm1d(w), nn.ReLU()]
            c = w
        self.frames = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(2 * w, cfg.embed_dim), nn.ReLU())
        self.head = nn.Linear(cfg.embed_dim, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.frames(x[:, 0])  # [B, width, T]
        stats = torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1)  # [B, 2 width]
        emb = self.embed(stats)
        return self.head(emb), emb


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random time shift (within +-8 frames, silence filled), level shift and small noise, in normalised log-Mel."""
    b = x.shape[0]
    shifts = torch.randint(-8, 9, (b,), generator=gen)
    out = torch.stack([torch.roll(xi, int(s), dims=-1) for xi, s in zip(x, shifts)])
    level = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.1
    out = out + level * (out > -0.99) + 0.02 * torch.randn(out.shape, generator=gen)
    return out.clamp(-1.0, 1.0)


def train_evaluator(train: Features, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, log=print) -> EvalClassifier:
    """Adam with cosine decay, cross-entropy with label smoothing 0.05; CPU, a couple of minutes."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = EvalClassifier()
    x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y)

    def batch():
        idx = torch.randint(0, len(y_all), (batch_size,), generator=gen)
        return augment(x_all[idx], gen), y_all[idx]

    return fit_judge(model, batch, steps, lr, log)


def fit_judge(model: nn.Module, next_batch, steps: int, lr: float, log=print, bf16: bool = False) -> nn.Module:
    """The judges' training loop: AdamW (weight decay 1e-4) with cosine decay, cross-entropy with label smoothing
    0.05; next_batch() -> (inputs, labels); bf16 autocasts the network (faster where the CPU has AMX)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start = time.time()
    model.train()
    for step in range(1, steps + 1):
        inputs, labels = next_batch()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = model(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps:
            log(f"step {step}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    return model.eval()


@torch.no_grad()
def posteriors_and_embeddings(model: nn.Module, inputs, n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A judge's (posteriors [n, K], embeddings [n, D]) as float64; inputs(i, j) -> the network's input for items i:j."""
    model.eval()
    probs, embs = [], []
    for i in range(0, n, batch_size):
        logits, emb = model(inputs(i, min(i + batch_size, n)))
        probs.append(torch.softmax(logits.double(), dim=1).numpy())
        embs.append(emb.double().numpy())
    return np.concatenate(probs), np.concatenate(embs)


def classify(model: EvalClassifier, x: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Normalised log-Mels [N, 1, n_mels, T] -> (posteriors [N, K], embeddings [N, D]) as float64."""
    return posteriors_and_embeddings(model, lambda i, j: torch.from_numpy(np.ascontiguousarray(x[i:j], dtype=np.float32)), len(x), batch_size)


def judge_checkpoint(kind: str, model: nn.Module, test_accuracy: float, steps: int) -> dict:
    """A judge's released checkpoint (weights, config, its accuracy on the test split)."""
    return {
        "format": FORMAT_VERSION,
        "kind": kind,
        "config": config_to_dict(model.cfg),
        "ema": model.state_dict(),
        "released": True,
        "step": steps,
        "test_accuracy": test_accuracy,
    }


def load_judge(path, kind: str, network: type, config: type) -> nn.Module:
    """A judge of `kind` rebuilt from its checkpoint (network(config(...)) with its weights), in eval mode."""
    ckpt = load_checkpoint(path, kind)
    model = network(config_from_dict(config, ckpt["config"]))
    try:
        model.load_state_dict(ckpt["ema"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the stored config: {exc}") from exc
    return model.eval()


def evaluator_checkpoint(model: EvalClassifier, test_accuracy: float, steps: int) -> dict:
    return judge_checkpoint("evaluator", model, test_accuracy, steps)


def load_evaluator(path) -> EvalClassifier:
    return load_judge(path, "evaluator", EvalClassifier, EvaluatorConfig)


# --- metrics (numpy; definitions from METHOD.md) --------------------------------------------------------------


def _kl(p: np.ndarray, q: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """KL(p || q) along the last axis."""
    p, q = np.clip(p, eps, 1.0), np.clip(q, eps, 1.0)
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def frechet_distance(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """FID between two sets of embeddings: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a S_b), which are real and >= 0 for PSD S_a, S_b.
    """
    mu_a, mu_b = emb_a.mean(0), emb_b.mean(0)
    cov_a, cov_b = np.cov(emb_a, rowvar=False), np.cov(emb_b, rowvar=False)
    eig = np.linalg.eigvals(cov_a @ cov_b)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0.0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)


def inception_score(probs: np.ndarray) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y)))."""
    return float(np.exp(_kl(probs, probs.mean(0, keepdims=True)).mean()))


def modified_inception_score(probs: np.ndarray) -> float:
    """mIS = exp(E over pairs of samples of the same (predicted) class of KL(p(y|x_i) || p(y|x_j))), i != j."""
    labels = probs.argmax(1)
    total, pairs = 0.0, 0
    for k in np.unique(labels):
        p = probs[labels == k]
        if len(p) < 2:
            continue
        kl = _kl(p[:, None, :], p[None, :, :])  # [n, n], zero diagonal
        total += kl.sum()
        pairs += len(p) * (len(p) - 1)
    return float(np.exp(total / pairs)) if pairs else float("nan")


def am_score(probs: np.ndarray, train_prior: np.ndarray) -> float:
    """AM = KL(p_train(y) || p_gen(y)) + E_x H(p(y|x))."""
    entropy = -np.sum(np.clip(probs, 1e-12, 1.0) * np.log(np.clip(probs, 1e-12, 1.0)), axis=1)
    return float(_kl(train_prior, probs.mean(0)) + entropy.mean())


def class_accuracy(probs: np.ndarray, wanted: np.ndarray) -> float:
    return float((probs.argmax(1) == wanted).mean())


def quality_metrics(probs: np.ndarray, embs: np.ndarray, real_embs: np.ndarray, train_prior: np.ndarray, wanted: np.ndarray | None = None) -> dict:
    """All of the paper's metrics for one set of generated samples (accuracy only for conditional samples)."""
    out = {
        "fid": frechet_distance(embs, real_embs),
        "is": inception_score(probs),
        "mis": modified_inception_score(probs),
        "am": am_score(probs, train_prior),
        "samples": int(len(probs)),
    }
    if wanted is not None:
        out["accuracy"] = class_accuracy(probs, wanted)
    return out


# --- evaluating a bundle ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """What generated samples are compared with: real training-split embeddings and the class prior."""

    embeddings: np.ndarray  # [N, D]
    prior: np.ndarray  # [K] class frequencies of the training split

    @classmethod
    def from_features(cls, model: EvalClassifier, train: Features, n_classes: int = 10) -> Reference:
        _, emb = classify(model, train.x)
        return cls(emb, np.bincount(train.y, minlength=n_classes) / len(train.y))


def generate_normalised(
    bundle, count_per_class: int, sampler: str | None, steps: int | None, guidance: float, seed: int, batch_size: int = 50, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """count_per_class samples of every digit from a bundle on ORT: (x [N, 1, n_mels, T] in [-1, 1], digits [N])."""
    from c2d.runtime import load
    from c2d.runtime.audio import normalize
    from c2d.runtime.backends import BackendOptions

    gen = load(bundle, "ort", BackendOptions(threads=threads))  # metrics from the reference engine, whatever deployment.json chose
    digits = [str(d) for d in range(len(gen.meta.labels))]
    result = gen.sample(digits, count_per_class, seed, steps, sampler, guidance, batch_size, vocode=False)  # metrics read log-Mels
    return normalize(result.log_mel, gen.meta.mel)[:, None], np.array(result.digits)


def evaluate_samples(model: EvalClassifier, x: np.ndarray, wanted: np.ndarray | None, reference: Reference) -> dict:
    probs, emb = classify(model, x)
    return quality_metrics(probs, emb, reference.embeddings, reference.prior, wanted)
