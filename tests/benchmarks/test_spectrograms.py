"""benchmarks/spectrograms.py: the spectral balance reads loud frames only, and bad --set values are refused."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from c2d.benchmarks import spectrograms as sp


def test_band_balance_reads_the_loud_frames_of_each_band():
    m = np.full((2, 80, 10), -11.5, dtype=np.float32)  # silence at the log floor
    m[:, 60:, 2:6] = 0.0  # a loud burst in the top bands only
    m[:, :20, 2:6] = -2.0
    bands = sp.band_balance(m)
    assert bands["60-80"] == pytest.approx(0.0) and bands["0-20"] == pytest.approx(-2.0)
    assert bands["20-40"] == pytest.approx(-11.5)  # quiet frames (more than 30 dB down) are left out


def test_a_set_names_an_existing_file(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, audio=np.zeros((1, 10)), rate=22050, digits=np.zeros(1))
    assert sp.parse_set(f"old={path}") == ("old", path)
    for bad in (str(path), f"old={tmp_path / 'none.npz'}", f"={path}"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=AUDIO.npz"):
            sp.parse_set(bad)
