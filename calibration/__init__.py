"""Calibration data from real sampler runs, for quantization (see issue: calibration and quantization)."""
