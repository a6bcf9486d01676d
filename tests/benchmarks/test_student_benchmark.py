"""benchmarks/student.py: its rows, the interleaved speed figures on real (tiny) bundles, the quality verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import tiny_student, tiny_subnet

from c2d.benchmarks import student as sb
from c2d.models.scoring import FeatureDistance, ScoredSet


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    from c2d.export.exporter import export_bundle

    tmp = tmp_path_factory.mktemp("student-bench")
    out = {}
    for name, make in (("student", tiny_student), ("teacher", tiny_subnet)):
        out[name] = tmp / name
        export_bundle(make(tmp / f"{name}-ckpt"), out[name], vocoder="griffin-lim")
    return out


@pytest.mark.slow
def test_rows_and_speed_on_tiny_bundles(bundles):
    """Every row is timed at batch 1 and 8; the student's graph costs less per step than the teacher's; EM-100 is the
    speed reference (1.0) and a 2-step student is faster end to end than EM-100."""
    rows = sb.rows_for(bundles["student"], bundles["teacher"], None, [1, 2])
    assert [(r.sampler, r.steps) for r in rows] == [("consistency", 1), ("consistency", 2), ("em", 100), sb.bundle_default(bundles["teacher"])]
    result = sb.speed(rows, rounds=1, threads=1)
    em = result["teacher em-100"]
    assert em["batch1"]["speedup_vs_em100"] == 1.0 and em["batch8"]["speedup_vs_em100"] == 1.0
    two = result["student consistency-2"]
    assert two["gmac_per_step"] < em["gmac_per_step"]
    for batch in ("batch1", "batch8"):
        assert two[batch]["speedup_vs_em100"] > 1.0
        assert all(r[batch]["end_to_end_ms"] > r[batch]["vocoder_ms"] > 0 for r in result.values())
    text = sb.markdown({"cpu": "x", "date": "d", "threads": 1, "rounds": 1, "speed": result})
    assert text.count("\n| student consistency-") == 2
    scaled = sb.rows_for(bundles["student"], bundles["teacher"], None, [1, 2], [3.0, 4.5])
    assert [(r.label, r.guidance) for r in scaled[:4]] == [
        ("student consistency-1 g3", 3.0),
        ("student consistency-2 g3", 3.0),
        ("student consistency-1 g4.5", 4.5),
        ("student consistency-2 g4.5", 4.5),
    ]
    assert [(r.label, r.sampler) for r in sb.rows_for(bundles["student"], bundles["teacher"], None, [25], None, "ancestral")[:1]] == [
        ("student ancestral-25", "ancestral")
    ]


def scored(shift: float, seed: int = 4) -> ScoredSet:
    """Clips of the same items: `shift` moves the features and lowers DNSMOS (shift 0: a copy)."""
    rng = np.random.default_rng(seed)
    ref, base = rng.standard_normal((300, 6)), rng.standard_normal((200, 6))
    correct = rng.random(200) < 0.9
    wrong = rng.random(200) < (0.3 if shift else 0.0)
    return ScoredSet({"j": correct & ~wrong}, {"j": FeatureDistance(base + shift, ref)}, np.full(200, 2.0 - shift / 5))


def test_compare_marks_rows_within_em100_and_against_the_shipped_default():
    rows = [
        sb.Row("student consistency-1", Path("s"), "consistency", 1),
        sb.Row("student consistency-4", Path("s"), "consistency", 4),
        sb.Row("teacher em-100", Path("t"), "em", 100),
        sb.Row("shipped ancestral-25 (the default today)", Path("d"), "ancestral", 25),
    ]
    sets = {
        "student consistency-1": scored(0.5),
        "student consistency-4": scored(0.0),
        "teacher em-100": scored(0.0),
        "shipped ancestral-25 (the default today)": scored(0.0),
    }
    result = sb.compare(rows, sets)
    assert not result["student consistency-1"]["within_em100"] and result["student consistency-4"]["within_em100"]
    assert "vs_em100" not in result["teacher em-100"] and "vs_shipped" not in result["shipped ancestral-25 (the default today)"]
    assert not result["student consistency-1"]["not_worse_than_shipped"]
    text = sb.markdown({"cpu": "x", "date": "d", "threads": 1, "rounds": 1, "speed": {}, "quality": result, "samples": 200})
    em_table, shipped_table = text.split("Against the shipped default:")
    assert "| teacher em-100 |" in em_table and em_table.rstrip().endswith("| yes |")
    assert "| student consistency-1 |" in em_table and "| no |" in em_table
    assert shipped_table.count("| reference |") == 1
