"""Measurement scripts: each writes its numbers under benchmarks/results/ and prints a Markdown table."""

import json
from pathlib import Path

from c2d.runtime.files import atomic_write_text


def write_results(path: Path, result: dict, markdown: str) -> None:
    """result as JSON at `path` and the table as Markdown beside it (.md), then the table on stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    atomic_write_text(path.with_suffix(".md"), markdown)
    print(markdown)
