"""Measurement scripts: each writes its numbers under benchmarks/results/ and prints a Markdown table."""

import json
from pathlib import Path


def write_results(path: Path, result: dict, markdown: str) -> None:
    """result as JSON at `path` and the table as Markdown beside it (.md), then the table on stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown)
    print(markdown)
