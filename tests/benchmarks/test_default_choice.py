"""benchmarks/default_choice.py: which point is chosen, the --against yardstick, and its table."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from c2d.benchmarks import default_choice as dc
from c2d.models.scoring import FeatureDistance, ScoredSet


def scored_sets():
    """A base set, a copy and a clearly worse set made from the same items (seeds)."""
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((300, 6))
    base = rng.standard_normal((200, 6))
    correct = rng.random(200) < 0.85
    ovrl = rng.normal(2.0, 0.3, 200)
    good = ScoredSet({"j": correct}, {"j": FeatureDistance(base, ref)}, ovrl)
    same = ScoredSet({"j": correct.copy()}, {"j": FeatureDistance(base.copy(), ref)}, ovrl.copy())
    worse = ScoredSet({"j": correct & (rng.random(200) > 0.15)}, {"j": FeatureDistance(base + 0.5, ref)}, ovrl - 0.1)
    return good, same, worse


def test_a_worse_set_fails_and_an_equal_one_passes():
    good, same, worse = scored_sets()
    assert dc.difference_to(good, same)[1]
    diff, ok = dc.difference_to(good, worse)
    assert not ok and diff["j"]["accuracy"]["high"] < 0


def test_choose_takes_the_fewest_evaluations_passing_the_reference_and_the_yardstick():
    points = {
        "em-100": {"nfe": 100},
        "ancestral-8": {"nfe": 8, "passes": False, "passes_against": True},
        "dpm2m-10": {"nfe": 10, "passes": True, "passes_against": False},
        "dpm2m-20": {"nfe": 20, "passes": True, "passes_against": True},
        "ddim-25": {"nfe": 25, "passes": True, "passes_against": True},
    }
    assert dc.choose(points) == "dpm2m-20"
    for row in points.values():
        row.pop("passes_against", None)  # no yardstick: the reference alone decides
    assert dc.choose(points) == "dpm2m-10"
    assert dc.choose({"em-100": {"nfe": 100}, "ancestral-8": {"nfe": 8, "passes": False}}) is None


def test_against_names_a_bundle_folder_sampler_and_steps(tmp_path):
    assert dc.parse_against(f"{tmp_path}:ancestral:25") == (tmp_path, ("ancestral", 25))
    with pytest.raises(argparse.ArgumentTypeError, match="bundle folder"):
        dc.parse_against(f"{tmp_path / 'missing'}:ancestral:25")
    with pytest.raises(argparse.ArgumentTypeError, match="SAMPLER:STEPS"):
        dc.parse_against(f"{tmp_path}:nosuch:25")


def test_markdown_shows_every_point_against_the_yardstick():
    good, same, worse = scored_sets()
    summary = {"j": {m: {"value": 0.5, "low": 0.4, "high": 0.6} for m in ("accuracy", "fid", "kid")}}
    points = {"em-100": {"nfe": 100, "scores": summary}, "ancestral-8": {"nfe": 8, "scores": summary}}
    points["ancestral-8"]["difference"], points["ancestral-8"]["passes"] = dc.difference_to(good, worse)
    for key, scored in (("em-100", same), ("ancestral-8", worse)):
        points[key]["against_difference"], points[key]["passes_against"] = dc.difference_to(good, scored)
    result = {
        "points": points,
        "reference": "em-100",
        "chosen": dc.choose(points),
        "samples": 200,
        "cpu": "test CPU",
        "date": "2026-12-06",
        "judges": {"j": "a test judge"},
        "against": {"label": "old:ancestral:25"},
    }
    text = dc.markdown(result)
    assert "Chosen: none (no point passes)" in text and "or than the yardstick" in text
    yard = text[text.index("Against the yardstick old:ancestral:25") :]
    assert "| em-100 |" in yard and yard.count("| yes |") == 1 and yard.count("| no |") == 1
