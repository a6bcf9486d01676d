"""benchmarks/table1.py: --only keeps the other rows from the last results, and refuses what it cannot keep."""

from __future__ import annotations

import json

import pytest

from c2d.benchmarks import table1


def results_file(tmp_path, rows, samples=1000):
    path = tmp_path / "table1.json"
    path.write_text(json.dumps({"samples_per_row": samples, "rows": rows}))
    return path


def all_rows():
    return [{"model": row, "bundle": bundle, "sampler": "em-100", "metrics": {"fid": 1.0}} for row, bundle, *_ in table1.ROWS]


def test_only_keeps_every_other_bundle_s_rows(tmp_path):
    kept = table1.previous_quality(results_file(tmp_path, all_rows()), ["shipped-default", "edm-18k"], 100)
    assert set(kept) == {row for row, bundle, *_ in table1.ROWS if bundle not in ("shipped-default", "edm-18k")}
    assert table1.previous_quality(results_file(tmp_path, all_rows()), [], 100) == {}


def test_only_refuses_a_different_sample_count_or_a_missing_row(tmp_path):
    with pytest.raises(SystemExit, match="300 samples per row, not 1000"):
        table1.previous_quality(results_file(tmp_path, all_rows(), samples=300), ["shipped"], 100)
    rows = [r for r in all_rows() if r["bundle"] != "shipped"]
    with pytest.raises(SystemExit, match="18k steps .shipped."):
        table1.previous_quality(results_file(tmp_path, rows), ["edm-18k"], 100)
    with pytest.raises(SystemExit, match="does not exist"):
        table1.previous_quality(tmp_path / "none.json", ["shipped"], 100)


def test_an_export_is_current_only_for_the_same_checkpoint_files(tmp_path):
    """The shipped bundle is current for the shipped subnet (its vocoder's checkpoint aside), not for another one."""
    from c2d.runtime.generate import default_bundle

    assert not table1.current_export(tmp_path / "missing", [table1.CKPT / table1.SHIPPED_SUBNET])
    assert table1.current_export(default_bundle(), [table1.CKPT / table1.SHIPPED_SUBNET])
    assert not table1.current_export(default_bundle(), [table1.CKPT / "subnet-small.pt"])


def test_the_committed_table_has_every_row_of_the_benchmark():
    """The committed results hold a row for every ROWS entry, so any --only keeps the others."""
    committed = json.loads((table1.harness.RESULTS / "table1.json").read_text())
    kept = table1.previous_quality(table1.harness.RESULTS / "table1.json", ["edm-18k"], committed["samples_per_row"] // 10)
    assert len(kept) == len(table1.ROWS) - 1
