"""docs/results/ is generated from benchmarks/results/*.json: a stale or hand-edited page fails the suite."""

import shutil

from c2d.benchmarks import results_pages


def test_docs_results_match_the_result_files():
    assert results_pages.main(["--check"]) == 0, "run: python -m c2d.benchmarks.results_pages"


def test_a_hand_edited_figure_is_caught(tmp_path, monkeypatch, capsys):
    pages = tmp_path / "results"
    shutil.copytree(results_pages.PAGES, pages)
    monkeypatch.setattr(results_pages, "PAGES", pages)
    assert results_pages.main(["--check"]) == 0
    table1 = pages / "table1.md"
    table1.write_text(table1.read_text().replace("77.5 %", "97.5 %"))
    assert results_pages.main(["--check"]) == 1
    assert "table1.md" in capsys.readouterr().err
    results_pages.main([])
    assert "77.5 %" in table1.read_text()


def test_every_page_names_command_machine_and_date():
    for name, text in results_pages.render().items():
        if name != "README.md":
            assert all(f"- {key}: " in text for key in ("command", "machine", "date")), name
