"""Training the subnet on a subset of the data (issue 18): digits only, or a stratified fraction; recorded in the
checkpoint and the bundle, shown by `c2d inspect`, refused on resume if it changes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from c2d.cli import main
from c2d.models.checkpoint import load_checkpoint
from c2d.models.data import DataError, Features, parse_digit_list, train_subset


def speakers_features(per_group: int = 5) -> Features:
    """10 digits x 3 speakers x per_group clips (tiny arrays: only labels and speakers matter here)."""
    y = np.repeat(np.arange(10), 3 * per_group)
    speakers = np.tile(np.repeat(np.array(["a", "b", "c"]), per_group), 10)
    return Features(np.arange(len(y), dtype=np.float32)[:, None], y, speakers)


def test_digit_lists_parse_and_bad_ones_are_named():
    assert parse_digit_list("7, 3,5") == (3, 5, 7)
    for bad, word in [("", "no digit"), ("3,x", "'x'"), ("10", "'10'"), ("3,3", "twice"), ("-1", "'-1'")]:
        with pytest.raises(DataError, match=word):
            parse_digit_list(bad)


def test_digits_subset_keeps_only_those_labels():
    subset, info = train_subset(speakers_features(), digits=(3, 5, 7))
    assert set(subset.y) == {3, 5, 7} and info["clips"] == 45 and info["of"] == 150
    assert info["per_digit"]["3"] == 15 and info["per_digit"]["4"] == 0 and info["digits"] == [3, 5, 7]


def test_fraction_is_stratified_by_digit_and_speaker_and_seeded():
    f = speakers_features(per_group=10)  # 300 clips
    subset, info = train_subset(f, fraction=0.1, seed=4)
    assert info["clips"] == 30 and all(n == 3 for n in info["per_digit"].values())
    for d in range(10):  # each digit's 3 clips come from 3 different speakers
        assert sorted(subset.speakers[subset.y == d]) == ["a", "b", "c"]
    again, _ = train_subset(f, fraction=0.1, seed=4)
    other, _ = train_subset(f, fraction=0.1, seed=5)
    assert np.array_equal(subset.x, again.x) and not np.array_equal(subset.x, other.x)
    both, info = train_subset(f, digits=(4,), fraction=0.5)
    assert set(both.y) == {4} and info["clips"] == 15


@pytest.mark.parametrize("kwargs, word", [({"fraction": 0.0}, "must lie in"), ({"fraction": 1.5}, "must lie in"), ({"digits": (3,)}, "empty")])
def test_bad_subsets_are_clear_errors(kwargs, word):
    f = speakers_features()
    if "digits" in kwargs:
        f = Features(f.x[f.y != 3], f.y[f.y != 3], f.speakers[f.y != 3])
    with pytest.raises(DataError, match=word):
        train_subset(f, **kwargs)


@pytest.mark.slow
def test_subset_training_is_recorded_exported_and_inspected(tmp_path, features_file):
    from c2d.export.exporter import export_bundle

    runner = CliRunner()
    common = ["--size", "tiny", "--steps", "2", "--batch-size", "4", "--features", str(features_file)]
    assert runner.invoke(main, ["train", "classifier", "-o", str(tmp_path / "c.pt"), *common]).exit_code == 0
    res = runner.invoke(
        main,
        [
            "train",
            "subnet",
            "--classifier",
            str(tmp_path / "c.pt"),
            "--train-digits",
            "3,5",
            "--train-fraction",
            "0.5",
            "-o",
            str(tmp_path / "s.pt"),
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    assert "training on digits 3,5, fraction 0.5" in res.output
    subset = load_checkpoint(tmp_path / "s.pt")["train_subset"]
    assert subset["digits"] == [3, 5] and subset["fraction"] == 0.5 and subset["clips"] == 8
    res = runner.invoke(
        main,
        ["train", "subnet", "--classifier", str(tmp_path / "c.pt"), "--train-digits", "4", "-o", str(tmp_path / "s.pt"), *common, "--steps", "3"],
    )
    assert res.exit_code == 1 and "another subset" in res.output
    manifest = export_bundle([str(tmp_path / "s.pt")], tmp_path / "b", vocoder="griffin-lim")
    assert manifest.train_subset["digits"] == [3, 5]
    res = runner.invoke(main, ["inspect", str(tmp_path / "b")])
    assert res.exit_code == 0 and "subnet trained on: digits 3,5, fraction 0.5 (seed 0): 8 of 80 clips" in res.output, res.output


@pytest.mark.parametrize(
    "args, word",
    [
        (["classifier", "--train-digits", "3"], "No such option '--train-digits'"),
        (["subnet", "--train-fraction", "0"], "--train-fraction"),
        (["subnet", "--train-fraction", "nan"], "--train-fraction"),
    ],
)
def test_subset_options_are_checked(tmp_path, args, word):
    res = CliRunner().invoke(main, ["train", *args, "--classifier", "x.pt", "-o", str(tmp_path / "o.pt")])
    assert res.exit_code == 2 and word in res.output, res.output


RECIPE = ("steps", "batch_size", "lr", "warmup", "ema_decay", "grad_clip", "seed")


@pytest.mark.parametrize(
    "name, digits, fraction",
    [("subnet-small-digits357.pt", [3, 5, 7], None), ("subnet-small-digit4.pt", [4], None), ("subnet-small-frac3.pt", None, 0.03)],
)
def test_shipped_low_data_subnets_record_their_subset_and_the_reference_recipe(name, digits, fraction):
    """The three ablations are released files trained on what their names say, with the full-data reference's
    budget and recipe (the paper's equal-budget comparison) on the same frozen classifier."""
    from importlib.resources import files

    folder = files("c2d.models.checkpoints")
    ckpt, reference = load_checkpoint(folder / name, "subnet"), load_checkpoint(folder / "subnet-small.pt", "subnet")
    assert ckpt["released"] and ckpt["step"] == reference["step"] == 4000
    assert ckpt["train_subset"]["digits"] == digits and ckpt["train_subset"]["fraction"] == fraction
    assert {k: ckpt["train"][k] for k in RECIPE} == {k: reference["train"][k] for k in RECIPE}
    assert {k: ckpt["config"][k] for k in reference["config"]} == reference["config"]  # same architecture
    assert not ckpt["config"]["gaussian_skip"]  # (a field newer than the reference file, off there)
    assert ckpt["classifier"]["sha256"] == reference["classifier"]["sha256"]  # the same frozen classifier
