"""Export validation: ONNX Runtime against PyTorch autograd, on shapes and seeds the tracer never saw.

Errors are relative: max |onnx - torch| / max |torch|. Any case over budget fails the export (optimum's
`validate_model_outputs`, but failing instead of warning).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from c2d.models.sampling import reference_sample
from c2d.models.subnet import classifier_pass
from c2d.runtime.audio import MelConfig, denormalize
from c2d.runtime.errors import C2DError
from c2d.runtime.samplers import draw_noise, euler_maruyama, linear_schedule
from c2d.runtime.sde import SDEConfig

GENERATOR_BUDGET = 1e-4  # per output, per case
SAMPLING_BUDGET = 1e-3  # whole 100-step guided run, on the log-Mel
VOCODER_BUDGET = 1e-4
VALIDATION_BATCHES = (1, 3)  # the graph is traced at batch 2
VALIDATION_SEEDS = (101, 202)  # tracing uses seed 0


class ExportValidationError(C2DError, RuntimeError):
    """ONNX Runtime disagrees with PyTorch beyond budget; the export is abandoned."""


def relative_error(onnx_out: np.ndarray, torch_out: np.ndarray) -> float:
    return float(np.abs(onnx_out - torch_out).max() / max(float(np.abs(torch_out).max()), 1e-12))


@dataclass(frozen=True)
class CaseResult:
    batch: int
    seed: int
    t: float
    eps: float  # relative errors of the three outputs
    logits: float
    guidance: float

    def worst(self) -> float:
        return max(self.eps, self.logits, self.guidance)


def validation_times(sde: SDEConfig) -> tuple[float, ...]:
    return (sde.t_min, 0.1, 0.5, 1.0)


def random_inputs(batch: int, seed: int, t: float, shape: tuple[int, ...], n_classes: int) -> dict[str, np.ndarray]:
    """x ~ N(0, 1), random classes and guidance scales in [0, 5]: the graph's four inputs."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, *shape), dtype=np.float32),
        "t": np.full((batch,), t, dtype=np.float32),
        "y": np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, batch)],
        "gamma": rng.uniform(0.0, 5.0, batch).astype(np.float32),
    }


def torch_outputs(model, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(guided eps, logits, guidance gradient) from the PyTorch model with autograd: the reference."""
    x, t, y, gamma = (torch.from_numpy(feeds[k]) for k in ("x", "t", "y", "gamma"))
    from c2d.models.student import Student

    eps, logits = model.guided(x, t, y, gamma)
    guidance = torch.zeros_like(x) if isinstance(model, Student) else classifier_pass(model.classifier, x, t, False, y)[3]
    return eps.detach().numpy(), logits.detach().numpy(), guidance.numpy()


def validate_generator(model, session, sde: SDEConfig, shape: tuple[int, ...], n_classes: int, budget: float = GENERATOR_BUDGET) -> list[CaseResult]:
    """Every (batch, seed, t) case; raises ExportValidationError listing the cases over budget."""
    results = []
    for batch, seed in zip(VALIDATION_BATCHES, VALIDATION_SEEDS):
        for t in validation_times(sde):
            feeds = random_inputs(batch, seed, t, shape, n_classes)
            ours = session.run(["eps", "logits", "guidance"], feeds)
            errs = [relative_error(o, r) for o, r in zip(ours, torch_outputs(model, feeds))]
            results.append(CaseResult(batch, seed, t, *errs))
    failed = [r for r in results if not r.worst() <= budget]  # NaN fails too
    if failed:
        lines = "\n".join(
            f"  batch {r.batch} seed {r.seed} t={r.t:g}: eps {r.eps:.2e} logits {r.logits:.2e} guidance {r.guidance:.2e}" for r in failed
        )
        raise ExportValidationError(f"ONNX Runtime disagrees with PyTorch beyond {budget:g} (relative):\n{lines}")
    return results


def validate_sampling(
    model, session, sde: SDEConfig, mel: MelConfig, shape: tuple[int, ...], steps: int = 100, gamma: float = 3.0, budget: float = SAMPLING_BUDGET
) -> float:
    """A whole guided EM run from the same noise in ORT and in PyTorch: relative error of the final log-Mel."""
    seeds, digits = (11, 12), (3, 7)
    y = np.eye(10, dtype=np.float32)[list(digits)]

    def onnx_eps(x: np.ndarray, t: float) -> np.ndarray:
        b = x.shape[0]
        feeds = {"x": x.astype(np.float32), "t": np.full((b,), t, np.float32), "y": y, "gamma": np.full((b,), gamma, np.float32)}
        return session.run(["eps"], feeds)[0]

    x_T, noise = draw_noise(seeds, steps, shape)
    ours = euler_maruyama(onnx_eps, x_T, noise, linear_schedule(steps, sde.t_min), sde)
    ref = reference_sample(model, sde, seeds, digits, gamma, steps, shape)
    err = relative_error(denormalize(ours, mel), denormalize(ref, mel))
    if not err <= budget:
        raise ExportValidationError(
            f"a {steps}-step guided ONNX Runtime sampling run ends {err:.2e} (relative, log-Mel) from the PyTorch reference; budget {budget:g}"
        )
    return err


def validate_vocoder(generator, session, n_mels: int, budget: float = VOCODER_BUDGET) -> float:
    """Waveforms from ORT and PyTorch for random log-Mels of two lengths not used for tracing."""
    worst = 0.0
    for batch, frames, seed in ((1, 40, 5), (2, 88, 6)):
        mel = np.random.default_rng(seed).normal(-5.0, 2.0, (batch, n_mels, frames)).astype(np.float32)
        with torch.no_grad():
            ref = generator(torch.from_numpy(mel)).numpy()
        worst = max(worst, relative_error(session.run(None, {"mel": mel})[0], ref))
    if not worst <= budget:
        raise ExportValidationError(f"vocoder: ONNX Runtime disagrees with PyTorch by {worst:.2e} (relative); budget {budget:g}")
    return worst


def vocoder_reference_mels(n_mels: int, frames: int = 88) -> np.ndarray:
    """Two log-Mels [2, n_mels, frames]: a smooth speech-like pattern and random values, both in the model's range."""
    rng = np.random.default_rng(404)
    bands, time = np.arange(n_mels)[:, None], np.arange(frames)[None, :]
    smooth = -7.0 + 6.0 * np.exp(-(((bands - 20) / 12.0) ** 2)) * np.sin(np.pi * time / frames) ** 2
    return np.stack([smooth, rng.normal(-5.0, 2.0, (n_mels, frames))]).astype(np.float32)


def write_vocoder_reference(vocoder, mel_cfg: MelConfig, path) -> None:
    """The PyTorch vocoder's waveforms for vocoder_reference_mels, saved in the bundle for backend parity."""
    from c2d.runtime.files import atomic_path

    mel = vocoder_reference_mels(mel_cfg.n_mels, mel_cfg.n_frames)
    with torch.no_grad():
        wave = vocoder(torch.from_numpy(mel)).numpy()
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, mel=mel, wave=wave)


def write_reference(model, sde: SDEConfig, shape: tuple[int, ...], n_classes: int, path) -> None:
    """The PyTorch outputs for one batch-2 case per validation time, saved in the bundle: any backend on any
    device can then be checked against PyTorch without torch (runtime/parity.py)."""
    from c2d.runtime.files import atomic_path
    from c2d.runtime.parity import reference_arrays

    cases = []
    for k, t in enumerate(validation_times(sde)):
        feeds = random_inputs(2, 303 + k, t, shape, n_classes)
        cases.append((feeds, dict(zip(("eps", "logits", "guidance"), torch_outputs(model, feeds)))))
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, **reference_arrays(cases))


def summarize(results: list[CaseResult]) -> dict:
    """Worst relative error per output over all cases, and the cases themselves, for the manifest."""
    return {
        "max_relative_error": {k: max(getattr(r, k) for r in results) for k in ("eps", "logits", "guidance")},
        "cases": [asdict(r) for r in results],
    }
