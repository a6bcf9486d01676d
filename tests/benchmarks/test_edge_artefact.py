"""The first-frame artefact measure sees a burst in the first frame's top bands and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from c2d.benchmarks.edge_artefact import TOP_BANDS, edge_excess, rates, wilson


def test_a_first_frame_burst_in_the_top_bands_is_an_excess_and_a_loud_word_is_not():
    quiet = np.full((3, 80, 88), -8.0, np.float32)
    burst, word, late = quiet.copy(), quiet.copy(), quiet.copy()
    burst[0, -TOP_BANDS:, 0] = -3.0  # 5 nats above the rest, in frame 0 only
    word[0, :40, 0:30] = 0.0  # a loud start in the low bands
    late[0, -TOP_BANDS:, 50] = -3.0  # the same burst later in the clip
    x = np.concatenate([burst[:1], word[:1], late[:1]])
    excess = edge_excess(x)
    assert excess[0] == pytest.approx(5.0) and excess[1] == pytest.approx(0.0) and excess[2] == pytest.approx(0.0)
    r = rates(excess, threshold=0.5)
    assert r["rate"] == pytest.approx(1 / 3) and r["loud"]["2.0"] == pytest.approx(1 / 3)


def test_the_wilson_interval_holds_the_rate_and_narrows_with_n():
    low, high = wilson(8, 100)
    assert low < 0.08 < high and 0 <= low and high <= 1
    low2, high2 = wilson(80, 1000)
    assert high2 - low2 < (high - low) / 2
    assert wilson(0, 50)[0] == 0.0 and wilson(50, 50)[1] == 1.0
