"""Evaluation: metric functions on cases with known answers, the evaluator, and the profiler."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from c2d.cli import main
from c2d.models.evaluator import (
    EvalClassifier,
    am_score,
    class_accuracy,
    classify,
    frechet_distance,
    inception_score,
    modified_inception_score,
    quality_metrics,
    train_evaluator,
)

CKPTS = Path(__file__).resolve().parents[2] / "models" / "checkpoints"


def confident(labels, k: int = 10) -> np.ndarray:
    return np.eye(k)[labels]


def test_fid_of_identical_sets_is_zero_and_grows_with_a_mean_shift():
    emb = np.random.default_rng(0).standard_normal((2000, 16))
    assert abs(frechet_distance(emb, emb)) < 1e-6
    assert frechet_distance(emb, emb + 0.5) == pytest.approx(16 * 0.25, rel=1e-6)  # |shift|^2, same covariance
    other = np.random.default_rng(1).standard_normal((2000, 16))
    assert frechet_distance(emb, other) < 0.2  # two samples of one distribution


def test_inception_scores_on_confident_posteriors():
    uniform_classes = confident(np.repeat(np.arange(10), 20))
    assert inception_score(uniform_classes) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(confident(np.zeros(50, int))) == pytest.approx(1.0, rel=1e-6)  # one class only
    assert inception_score(np.full((40, 10), 0.1)) == pytest.approx(1.0, rel=1e-6)  # no confidence
    assert modified_inception_score(uniform_classes) == pytest.approx(1.0, rel=1e-6)  # identical within each class


def test_mis_rewards_diversity_within_a_class():
    same = np.tile([[0.8, 0.2] + [0.0] * 8], (10, 1))
    varied = np.array([[0.9, 0.1] + [0.0] * 8, [0.6, 0.4] + [0.0] * 8] * 5)
    assert modified_inception_score(varied) > modified_inception_score(same) == pytest.approx(1.0)


def test_am_score_is_zero_for_confident_samples_matching_the_prior():
    probs = confident(np.repeat(np.arange(10), 5))
    assert am_score(probs, np.full(10, 0.1)) == pytest.approx(0.0, abs=1e-9)
    assert am_score(confident(np.zeros(50, int)), np.full(10, 0.1)) > 2.0  # collapsed onto one class


def test_quality_metrics_fills_every_field():
    probs = confident(np.arange(20) % 10)
    emb = np.random.default_rng(0).standard_normal((20, 4))
    m = quality_metrics(probs, emb, emb, np.full(10, 0.1), wanted=np.arange(20) % 10)
    assert set(m) == {"fid", "is", "mis", "am", "samples", "accuracy"} and m["accuracy"] == 1.0
    assert class_accuracy(probs, (np.arange(20) + 1) % 10) == 0.0


@pytest.mark.slow
def test_evaluator_learns_synthetic_classes(synth):
    model = train_evaluator(synth, steps=60, batch_size=32, log=lambda _: None)
    probs, emb = classify(model, synth.x)
    assert emb.shape == (len(synth.y), 128)
    assert (probs.argmax(1) == synth.y).mean() > 0.3  # chance is 0.1


def test_shipped_evaluator_is_at_least_95_percent_accurate():
    from c2d.models.checkpoint import load_checkpoint
    from c2d.models.evaluator import load_evaluator

    ckpt = load_checkpoint(CKPTS / "evaluator.pt", "evaluator")
    assert ckpt["test_accuracy"] >= 0.95
    assert isinstance(load_evaluator(CKPTS / "evaluator.pt"), EvalClassifier)


@pytest.mark.slow
def test_profile_fills_every_field(tmp_path):
    res = CliRunner().invoke(
        main,
        [
            "profile",
            "--sampler",
            "ancestral",
            "--steps",
            "4",
            "--batch",
            "2",
            "--threads",
            "1",
            "--json",
            str(tmp_path / "p.json"),
            "--markdown",
            str(tmp_path / "p.md"),
        ],
    )
    assert res.exit_code == 0, res.output
    import json

    p = json.loads((tmp_path / "p.json").read_text())
    for key in (
        "step_ms",
        "end_to_end_s",
        "real_time_factor",
        "vocoder_share",
        "peak_rss_mb",
        "load_s",
        "file_bytes",
        "macs_per_step",
        "achieved_gmacs_per_s",
        "peak",
        "fraction_of_peak",
    ):
        assert p[key] is not None and p[key] != {}, key
    assert len(p["step_ms_all"]) == 4 and p["batch"] == 2 and p["audio_s"] == 2.0
    assert 0 < p["vocoder_share"] < 1 and [p["step_ms"][k] for k in ("min", "p10", "median", "p90", "p99", "max")] == sorted(
        p["step_ms"][k] for k in ("min", "p10", "median", "p90", "p99", "max")
    )
    assert "per-step latency" in (tmp_path / "p.md").read_text()


@pytest.mark.slow
def test_profile_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    res = CliRunner().invoke(main, ["profile", "--sampler", "ancestral", "--steps", "3", "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").stat().st_size > 1000
