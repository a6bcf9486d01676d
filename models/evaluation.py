"""Evaluate what the user hears: the audio `c2d generate` writes, re-analysed by judges that share nothing with the
generator, each measure with a 95 % confidence interval.

Judges (each gives class posteriors and an embedding per clip; FID and KID compare the embeddings with the same
judge's embeddings of FSDD's training recordings, brought through the same path):
- `mfcc-resnet`: a 2-D residual CNN over MFCCs at FSDD's 8 kHz (`models/audio_eval.py`), on the waveform;
- `mel-tdnn`: the first evaluator (`models/evaluator.py`), on the log-Mel re-analysed from the waveform;
- DNSMOS P.835 (`models/dnsmos.py`), a no-reference quality predictor, on the waveform (when speechmos is installed).
Every clip, generated or recorded, is first made what a listener gets: 1 s, centred, peak at -1 dBFS, 16-bit.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2d.models.audio_eval import RATE as JUDGE_RATE
from c2d.models.audio_eval import as_written, classify_audio, load_audio_evaluator
from c2d.models.scoring import FeatureDistance, ScoredSet, mean_estimate, wilson
from c2d.runtime.audio import DEFAULT_MEL, clip_features

Classify = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (waves [N, L], rate) -> (probs [N, K], emb [N, D])


@dataclass
class Judge:
    name: str
    classify: Classify
    reference: np.ndarray  # [M, D] embeddings of the training split's recordings
    about: dict  # checkpoint name, its hash, its accuracy on the test recordings, front end


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def mfcc_judge(checkpoint: str | Path, train_waves: np.ndarray, train_rate: int) -> Judge:
    """The MFCC ResNet judge; train_waves: the training split's recordings [M, L] at train_rate."""
    import torch

    model = load_audio_evaluator(checkpoint)
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)

    def classify(waves: np.ndarray, rate: int):
        return classify_audio(model, as_written(waves, rate))

    about = {
        "checkpoint": Path(checkpoint).name,
        "sha256": file_sha256(checkpoint),
        "test_accuracy": stored.get("test_accuracy"),
        "front_end": "MFCC 20 + deltas, 8 kHz, 25/10 ms",
        "network": "2-D ResNet",
    }
    return Judge("mfcc-resnet", classify, classify(train_waves, train_rate)[1], about)


def mel_judge(checkpoint: str | Path, train_waves: np.ndarray, train_rate: int) -> Judge:
    """The first evaluator (1-D TDNN over the HiFi-GAN log-Mel) on the log-Mel re-analysed from the waveform."""
    import torch

    from c2d.models.evaluator import classify as classify_mel
    from c2d.models.evaluator import load_evaluator

    model = load_evaluator(checkpoint)
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    mel = DEFAULT_MEL

    def classify(waves: np.ndarray, rate: int):
        clips = as_written(waves, rate, out_rate=mel.sample_rate)  # [N, 22050]
        x = np.stack([clip_features(c, mel) for c in clips])[:, None]  # [N, 1, 80, 88]
        return classify_mel(model, x)

    about = {
        "checkpoint": Path(checkpoint).name,
        "sha256": file_sha256(checkpoint),
        "test_accuracy": stored.get("test_accuracy"),
        "front_end": "log-Mel 80, 22,050 Hz, re-analysed from the waveform",
        "network": "1-D TDNN",
    }
    return Judge("mel-tdnn", classify, classify(train_waves, train_rate)[1], about)


def default_judges(data_dir=None, audio_evaluator: str | Path | None = None, mel_evaluator: str | Path | None = None, log=print) -> list[Judge]:
    """Both shipped judges with their reference embeddings of FSDD's training recordings."""
    from c2d.models.audio_eval import load_split_audio
    from c2d.models.checkpoints import shipped_checkpoint

    log("reading FSDD's training recordings for the judges' reference statistics")
    waves, _ = load_split_audio("train", data_dir)
    return [
        mfcc_judge(audio_evaluator or shipped_checkpoint("audio-evaluator.pt"), waves, JUDGE_RATE),
        mel_judge(mel_evaluator or shipped_checkpoint("evaluator.pt"), waves, JUDGE_RATE),
    ]


def open_dnsmos():
    """DNSMOS, or None where speechmos (its ONNX model) is not installed."""
    from c2d.models.dnsmos import DNSMOS, DNSMOSUnavailable

    try:
        return DNSMOS()
    except DNSMOSUnavailable:
        return None


def judge_waves(waves: np.ndarray, rate: int, wanted: np.ndarray | None, judges: list[Judge], dnsmos=None) -> ScoredSet:
    """What every measure of one set of clips [N, L] at `rate` is computed from, clip by clip."""
    waves = np.atleast_2d(waves)
    correct, distances = {}, {}
    for judge in judges:
        probs, emb = judge.classify(waves, rate)
        correct[judge.name] = None if wanted is None else probs.argmax(1) == np.asarray(wanted)
        distances[judge.name] = FeatureDistance(emb, judge.reference)
    ovrl = dnsmos.scores(as_written(waves, rate, out_rate=rate), rate)["ovrl"] if dnsmos is not None else None
    return ScoredSet(correct, distances, ovrl)


def save_scored(scored: ScoredSet, path: Path) -> None:
    """What a set was judged to be, clip by clip (embeddings, correctness, DNSMOS), as .npz (written atomically)."""
    from c2d.runtime.files import atomic_path

    arrays = {}
    for name, distance in scored.distances.items():
        arrays[f"emb/{name}"] = distance.gen
        if scored.correct[name] is not None:
            arrays[f"correct/{name}"] = scored.correct[name]
    if scored.dnsmos is not None:
        arrays["dnsmos"] = scored.dnsmos
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **arrays)


def load_scored(path: Path, judges: list[Judge]) -> ScoredSet:
    """save_scored's file against the judges' reference embeddings."""
    with np.load(path) as data:
        correct = {j.name: data[f"correct/{j.name}"] if f"correct/{j.name}" in data.files else None for j in judges}
        distances = {j.name: FeatureDistance(data[f"emb/{j.name}"], j.reference) for j in judges}
        dnsmos = data["dnsmos"] if "dnsmos" in data.files else None
    return ScoredSet(correct, distances, dnsmos)


def summarise(scored: ScoredSet, n_boot: int = 200, seed: int = 0) -> dict:
    """Per judge accuracy (Wilson; conditional sets only), FID and KID (bootstrap); DNSMOS OVRL (bootstrap), each as
    {value, low, high}."""
    result: dict = {"clips": int(len(next(iter(scored.distances.values())).gen))}
    for name, distance in scored.distances.items():
        row = {k: e.to_dict() for k, e in distance.estimates(n_boot, seed).items()}
        if scored.correct[name] is not None:
            row["accuracy"] = wilson(int(scored.correct[name].sum()), len(scored.correct[name])).to_dict()
        result[name] = row
    if scored.dnsmos is not None:
        result["dnsmos"] = {"ovrl": mean_estimate(scored.dnsmos, seed=seed).to_dict()}
    return result


def score_waves(waves: np.ndarray, rate: int, wanted: np.ndarray | None, judges: list[Judge], dnsmos=None, n_boot: int = 200, seed: int = 0) -> dict:
    """Every measure of one set of clips [N, L] at `rate`, with 95 % intervals (judge_waves, then summarise)."""
    return summarise(judge_waves(waves, rate, wanted, judges, dnsmos), n_boot, seed)


def provenance(**what) -> dict:
    """What produced a result: the caller's settings plus c2d's version, the date and the machine."""
    from c2d import __version__
    from c2d.runtime.deployment import machine

    return {**what, "c2d": __version__, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine()}


def judges_provenance(judges: list[Judge], dnsmos) -> dict:
    about = {j.name: j.about for j in judges}
    about["dnsmos"] = "DNSMOS P.835 (speechmos' sig_bak_ovr.onnx)" if dnsmos is not None else "not installed"
    return about


def generate_as_users_hear(
    bundle,
    count_per_digit: int,
    sampler: str | None,
    steps: int | None,
    guidance: float | None,
    seed: int,
    batch_size: int = 50,
    threads: int | None = None,
    log=lambda _: None,
):
    """count_per_digit samples of every digit as `c2d generate` makes them (the bundle's vocoder, peak -1 dBFS) on
    ORT: the runtime's Generation (audio [N, L], log_mel, digits, seeds, sampler, steps, guidance). `log` hears
    each finished batch."""
    import time

    from c2d.runtime import load
    from c2d.runtime.backends import BackendOptions

    gen = load(bundle, "ort", BackendOptions(threads=threads))  # the reference engine, whatever deployment.json chose
    digits = [str(d) for d in range(len(gen.meta.labels))]
    total = len(digits) * count_per_digit
    n_steps = gen.sampler_and_steps(sampler, steps)[1]
    calls, start = [0], time.time()

    def on_step(*_):
        calls[0] += 1
        if calls[0] % n_steps == 0:
            done = min(total, calls[0] // n_steps * batch_size)
            log(f"  generated {done}/{total} clips ({time.time() - start:.0f} s)")

    return gen, gen.sample(digits, count_per_digit, seed, steps, sampler, guidance, batch_size, on_step=on_step)


def evaluate_bundle(
    bundle,
    count_per_digit: int,
    sampler: str | None,
    steps: int | None,
    guidance: float | None,
    seed: int,
    judges: list[Judge],
    dnsmos=None,
    threads: int | None = None,
    n_boot: int = 200,
    log=lambda _: None,
) -> dict:
    """Generate as users hear it and score the audio with every judge; the record says what produced it."""
    from c2d.runtime.bundle import generator_sha256

    gen, run = generate_as_users_hear(bundle, count_per_digit, sampler, steps, guidance, seed, threads=threads, log=log)
    log(f"  judging the audio ({', '.join(j.name for j in judges)}{', DNSMOS' if dnsmos is not None else ''}) and bootstrapping the intervals")
    conditional = run.guidance > 0
    scores = score_waves(run.audio, run.sample_rate, np.array(run.digits) if conditional else None, judges, dnsmos, n_boot)
    return {
        "scores": scores,
        "provenance": provenance(
            bundle=str(bundle or "shipped"),
            generator_sha256=generator_sha256(gen.bundle),
            sampler=run.sampler,
            steps=run.steps,
            guidance=run.guidance,
            seeds=[run.seeds[0], run.seeds[-1]],
            samples_per_digit=count_per_digit,
            vocoder=gen.vocoder.name,
            judges=judges_provenance(judges, dnsmos),
        ),
    }


def scores_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per scored set, one column per judge and measure."""
    judge_names = [k for k in next(iter(rows.values())) if k not in ("clips", "dnsmos")]
    header = ["set", "clips"]
    for name in judge_names:
        header += [f"{name} accuracy", f"{name} FID", f"{name} KID"]
    header += ["DNSMOS OVRL"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, s in rows.items():
        cells = [label, str(s["clips"])]
        for name in judge_names:
            j = s[name]
            cells += [_fmt(j.get("accuracy"), percent=True), _fmt(j["fid"]), _fmt(j["kid"], scale=1000)]
        cells.append(_fmt(s.get("dnsmos", {}).get("ovrl")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(e: dict | None, percent: bool = False, scale: float = 1.0) -> str:
    if not e:
        return "-"
    if percent:
        return f"{100 * e['value']:.1f} % [{100 * e['low']:.1f}, {100 * e['high']:.1f}]"
    return f"{scale * e['value']:.2f} [{scale * e['low']:.2f}, {scale * e['high']:.2f}]"
