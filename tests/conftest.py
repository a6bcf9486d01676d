"""Shared fixtures: tiny models and synthetic spoken-digit-like features (no audio needed)."""
from __future__ import annotations

import numpy as np
import pytest

from c2d.models.data import Features


def synthetic_features(n_per_class: int = 8, seed: int = 0) -> Features:
    """Class k = a bright band at mel rows 8k..8k+7 over a silent (-1) background, plus noise: [N, 1, 80, 88]."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(10):
        for _ in range(n_per_class):
            x = np.full((1, 80, 88), -1.0, np.float32)
            start = rng.integers(10, 30)
            x[0, 8 * k : 8 * k + 8, start : start + 40] = 0.5
            xs.append(np.clip(x + 0.05 * rng.standard_normal(x.shape), -1, 1).astype(np.float32))
            ys.append(k)
    return Features(np.stack(xs), np.array(ys, np.int64), np.array(["synth"] * len(ys)))


@pytest.fixture
def synth() -> Features:
    return synthetic_features()


@pytest.fixture
def features_file(tmp_path, synth):
    """The synthetic features saved like `c2d features` saves them."""
    path = tmp_path / "features.npz"
    np.savez_compressed(path, x=synth.x, y=synth.y, speakers=synth.speakers, is_test=np.zeros(len(synth.y), bool))
    return path
