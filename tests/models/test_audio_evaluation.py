"""The audio evaluation: intervals that cover what they claim, a front end that hears what the WAV holds, judges
that see known degradations, and `c2d evaluate` scoring the audio with a record of what produced it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from c2d.cli import main
from c2d.models.audio_eval import RATE, as_written, mfcc_features
from c2d.models.data import DEFAULT_DATA
from c2d.models.evaluator import frechet_distance
from c2d.models.scoring import FeatureDistance, mean_estimate, weighted_fid, wilson

HAVE_FSDD = DEFAULT_DATA.is_dir()


# --- intervals ---------------------------------------------------------------------------------------------------


def test_wilson_interval_matches_the_textbook_values():
    e = wilson(92, 100)
    assert e.value == 0.92 and e.low == pytest.approx(0.8500, abs=1e-4) and e.high == pytest.approx(0.9589, abs=1e-4)
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == 1.0


def test_weighted_fid_equals_fid_of_the_duplicated_set():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((60, 5)), rng.standard_normal((80, 5)) + 0.3
    assert weighted_fid(a, None, b, None) == pytest.approx(frechet_distance(a, b), rel=1e-10)
    w = rng.integers(0, 3, 60).astype(float)
    assert weighted_fid(a, w, b, None) == pytest.approx(frechet_distance(np.repeat(a, w.astype(int), axis=0), b), rel=1e-8)


def test_weighted_kid_leaves_out_the_pairs_of_a_repeated_item():
    rng = np.random.default_rng(1)
    a, b = 3 * rng.standard_normal((30, 4)) + 2, 3 * rng.standard_normal((40, 4)) + 2
    fd = FeatureDistance(a, b)
    scale = np.sqrt(np.mean(b.var(0))) + 1e-12  # KID reads embeddings centred and scaled by the reference
    a, b = (a - b.mean(0)) / scale, (b - b.mean(0)) / scale
    w = rng.integers(0, 3, 30).astype(float)
    rows = np.repeat(np.arange(30), w.astype(int))
    k = (a[rows] @ a[rows].T / 4 + 1) ** 3
    distinct = rows[:, None] != rows[None, :]
    within = k[distinct].mean()
    kbb = (b @ b.T / 4 + 1) ** 3
    expected = within + kbb[~np.eye(40, dtype=bool)].mean() - 2 * ((a[rows] @ b.T / 4 + 1) ** 3).mean()
    assert fd.kid(w, None) == pytest.approx(expected, rel=1e-10)


def test_kid_interval_covers_zero_for_one_distribution_and_excludes_it_for_two():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((600, 16))
    same = FeatureDistance(rng.standard_normal((300, 16)), ref).estimates(n_boot=100)
    shifted = FeatureDistance(rng.standard_normal((300, 16)) + 0.25, ref).estimates(n_boot=100)
    assert same["kid"].low <= 0 <= same["kid"].high
    assert shifted["kid"].low > same["kid"].high and shifted["fid"].low > same["fid"].high
    for e in (*same.values(), *shifted.values()):
        assert e.low <= e.value <= e.high


def test_mean_interval_shrinks_with_more_items():
    rng = np.random.default_rng(3)
    small, large = mean_estimate(rng.normal(2, 1, 30)), mean_estimate(rng.normal(2, 1, 3000))
    assert small.low < 2 < small.high and large.low < 2 < large.high
    assert (large.high - large.low) < 0.3 * (small.high - small.low)


# --- the front end ---------------------------------------------------------------------------------------------


def test_clips_are_judged_as_the_wav_file_holds_them():
    """1 s at 8 kHz, centred, peak at -1 dBFS, 16-bit values, whatever the level and rate they came at."""
    t = np.arange(11025) / 22050
    quiet = 0.01 * np.sin(2 * np.pi * 440 * t)[None]
    clip = as_written(quiet, 22050)
    assert clip.shape == (1, RATE)
    assert np.abs(clip).max() == pytest.approx(10 ** (-1 / 20), abs=1e-4)
    assert np.allclose(clip * 32767, np.round(clip * 32767), atol=1e-3)
    assert np.abs(clip[0, :1000]).max() == 0 and np.abs(clip[0, -1000:]).max() == 0  # centred half second
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_written(np.full((1, 100), np.nan), RATE)


def test_mfcc_front_end_separates_tones_and_has_flat_deltas_on_a_steady_tone():
    t = np.arange(RATE) / RATE
    tones = as_written(np.stack([np.sin(2 * np.pi * f * t) for f in (300, 1500)]), RATE)
    feats = mfcc_features(tones)
    assert feats.shape == (2, 3, 20, 101)
    assert np.abs(feats[0, 0] - feats[1, 0]).mean() > 5  # different spectra, different cepstra
    assert np.abs(feats[0, 1, :, 10:-10]).max() < 1e-3  # a steady tone has no delta away from the edges


# --- c2d evaluate ------------------------------------------------------------------------------------------------


def synthetic_recordings(folder, speakers=("ann", "bob"), takes=range(0, 7)):
    """FSDD-named WAVs at 8 kHz: digit d is a 0.5 s chord around 200 + 150 d Hz (takes 0-4 test, the rest train)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(4000) / RATE
    for d in range(10):
        for s, speaker in enumerate(speakers):
            for k in takes:
                f = 200 + 150 * d + 10 * s
                wave = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2 * f * t) + 0.01 * rng.standard_normal(len(t))
                sf.write(folder / f"{d}_{speaker}_{k}.wav", (0.3 * wave / np.abs(wave).max()).astype(np.float32), RATE)
    return folder


@pytest.fixture(scope="module")
def audio_judge(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio-judge")
    data = synthetic_recordings(root / "fsdd")
    out = root / "audio-evaluator.pt"
    res = CliRunner().invoke(main, ["train", "audio-evaluator", "--steps", "30", "--batch-size", "16", "--fp32", "--data", str(data), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output
    return data, out


@pytest.mark.slow
def test_evaluate_scores_the_audio_and_records_what_produced_it(tmp_path, audio_judge):
    data, judge = audio_judge
    res = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--count",
            "2",
            "--sampler",
            "ancestral",
            "--steps",
            "3",
            "--data",
            str(data),
            "--audio-evaluator",
            str(judge),
            "--threads",
            "1",
            "--json",
            str(tmp_path / "m.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "m.json").read_text())
    scores, prov = record["scores"], record["provenance"]
    assert scores["clips"] == 20
    for name in ("mfcc-resnet", "mel-tdnn"):
        for measure in ("accuracy", "fid", "kid"):
            e = scores[name][measure]
            assert np.isfinite(e["value"]) and e["low"] <= e["value"] <= e["high"], (name, measure, e)
    assert 1.0 <= scores["dnsmos"]["ovrl"]["value"] <= 5.0
    from c2d.export.exporter import DEFAULT_GUIDANCE

    assert (prov["sampler"], prov["steps"], prov["guidance"], prov["seeds"]) == ("ancestral", 3, DEFAULT_GUIDANCE, [0, 19])
    assert len(prov["generator_sha256"]) == 64 and prov["vocoder"] and prov["judges"]["mfcc-resnet"]["sha256"]
    assert "mfcc-resnet accuracy" in res.output


def test_audio_evaluator_refuses_precomputed_features(tmp_path, features_file):
    res = CliRunner().invoke(main, ["train", "audio-evaluator", "--features", str(features_file), "-o", str(tmp_path / "a.pt")])
    assert res.exit_code == 2 and "No such option '--features'" in res.output
    assert not (tmp_path / "a.pt").exists()


# --- the shipped judge on FSDD -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FSDD, reason="FSDD not present next to the checkout")
def test_shipped_audio_judge_recognises_recordings_and_hears_noise():
    from c2d.benchmarks.evaluation_sensitivity import add_noise
    from c2d.models.audio_eval import classify_audio, load_audio_evaluator, load_split_audio
    from c2d.models.checkpoints import shipped_checkpoint

    model = load_audio_evaluator(shipped_checkpoint("audio-evaluator.pt"))
    clips, digits = load_split_audio("test")
    clean = (classify_audio(model, clips)[0].argmax(1) == digits).mean()
    noisy = (classify_audio(model, as_written(add_noise(clips, 0.0), RATE))[0].argmax(1) == digits).mean()
    assert clean >= 0.97 and noisy < clean - 0.05


def test_paired_differences_resolve_a_small_shift_that_separate_intervals_do_not():
    """Two sets built from the same seeds differ by a small shift: the paired interval excludes 0."""
    from c2d.models.scoring import ScoredSet, paired_differences

    rng = np.random.default_rng(4)
    ref = rng.standard_normal((400, 6))
    base = rng.standard_normal((200, 6))
    correct = rng.random(200) < 0.85
    worse_correct = correct & (rng.random(200) > 0.08)  # the same items, a few more errors
    ovrl = rng.normal(2.0, 0.3, 200)
    a = ScoredSet({"j": correct}, {"j": FeatureDistance(base, ref)}, ovrl)
    b = ScoredSet({"j": worse_correct}, {"j": FeatureDistance(base + 0.4, ref)}, ovrl - 0.03)
    d = paired_differences(a, b, n_boot=150)
    assert d["j"]["accuracy"].high < 0 and d["dnsmos"]["ovrl"].high < 0 and d["j"]["kid"].low > 0
    separate_a, separate_b = wilson(int(correct.sum()), 200), wilson(int(worse_correct.sum()), 200)
    assert separate_a.overlaps(separate_b)  # unpaired, the accuracy drop is within the intervals
    same = paired_differences(a, a, n_boot=50)
    assert all(e.value == 0 for e in same["j"].values())
