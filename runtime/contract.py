"""The bundle contract in one place: the files a bundle folder holds, the names of its graphs' inputs and outputs, the
format versions, and the class labels. Exporter, runtime, calibration, quantization and benchmarks all take these
names from here; a change to any of them is a format change (CHANGELOG.md).

A bundle folder:

    manifest.json            what the bundle is and every file's size and SHA-256 (runtime/bundle.py reads it)
    generator.onnx           x [B, 1, n_mels, T], t [B], y [B, classes], gamma [B] -> eps, logits, guidance
    vocoder.onnx             mel [B, n_mels, T] -> wave [B, 1, T * hop] (absent for Griffin-Lim)
    reference.npz            the generator's PyTorch outputs on fixed inputs (parity checks on any backend)
    vocoder_reference.npz    the vocoder's PyTorch outputs on a fixed log-Mel
    deployment.json          optional: the backend chosen for this bundle here (`c2d profile --backend all --in-bundle`)
"""

from __future__ import annotations

BUNDLE_FORMAT = 1  # manifest.json's format_version; a newer one is refused with "upgrade c2d"
DEPLOYMENT_FORMAT = 1  # deployment.json's format

MANIFEST_FILE = "manifest.json"
GENERATOR_FILE = "generator.onnx"
VOCODER_FILE = "vocoder.onnx"
REFERENCE_FILE = "reference.npz"
VOCODER_REFERENCE_FILE = "vocoder_reference.npz"
DEPLOYMENT_FILE = "deployment.json"

GENERATOR_INPUTS = ("x", "t", "y", "gamma")
GENERATOR_OUTPUTS = ("eps", "logits", "guidance")  # the runtime's sampler reads eps only
VOCODER_INPUT, VOCODER_OUTPUT = "mel", "wave"

LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
