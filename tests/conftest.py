"""Shared fixtures: tiny models and synthetic spoken-digit-like features (no audio needed)."""

from __future__ import annotations

import numpy as np
import pytest

from c2d.models.data import Features


def synthetic_features(n_per_class: int = 8, seed: int = 0) -> Features:
    """Class k = a 30 x 40 block of level -0.6 + 0.15 k at a random place on a silent (-1) background, plus noise.

    [N, 1, 80, 88]. The level, not the place, carries the class: the classifier pools over positions.
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(10):
        for _ in range(n_per_class):
            x = np.full((1, 80, 88), -1.0, np.float32)
            row, col = rng.integers(0, 50), rng.integers(0, 48)
            x[0, row : row + 30, col : col + 40] = -0.6 + 0.15 * k
            xs.append(np.clip(x + 0.05 * rng.standard_normal(x.shape), -1, 1).astype(np.float32))
            ys.append(k)
    return Features(np.stack(xs), np.array(ys, np.int64), np.array(["synth"] * len(ys)))


def restamp(bundle) -> None:
    """Record the bundle's changed files in its manifest (size, SHA-256), as a deliberate editor of a bundle would."""
    import json

    from c2d.runtime.bundle import stamp_files
    from c2d.runtime.contract import MANIFEST_FILE

    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    (bundle / MANIFEST_FILE).write_text(json.dumps(stamp_files(bundle, manifest)))


@pytest.fixture
def synth() -> Features:
    return synthetic_features()


@pytest.fixture
def features_file(tmp_path, synth):
    """The synthetic features saved like `c2d features` saves them."""
    path = tmp_path / "features.npz"
    np.savez_compressed(path, x=synth.x, y=synth.y, speakers=synth.speakers, is_test=np.zeros(len(synth.y), bool))
    return path


@pytest.fixture(autouse=True)
def private_deployment_cache(tmp_path_factory, monkeypatch):
    """Deployment profiles go to a per-test folder, never to the user's ~/.cache/c2d/deployments."""
    from c2d.runtime import deployment

    folder = tmp_path_factory.mktemp("deployments")
    monkeypatch.setattr(deployment, "cache_dir", lambda: folder)
    return folder
