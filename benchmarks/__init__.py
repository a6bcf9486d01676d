"""Measurement scripts: each writes its numbers under benchmarks/results/ and prints a Markdown table.

What they share (flags, interleaved timing, the provenance record, the result writer) is in harness.py;
docs/results/ is generated from their result files by results_pages.py.
"""
