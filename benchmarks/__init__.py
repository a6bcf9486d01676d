"""Measurement scripts: each writes its numbers under benchmarks/results/ and prints a Markdown table."""
