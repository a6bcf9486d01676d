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

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

BUNDLE_FORMAT = 1  # manifest.json's format_version; a newer one is refused with "upgrade c2d"
DEPLOYMENT_FORMAT = 2  # deployment.json's format (2: machine record with ISA features; the choice names its threads)

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


@dataclass(frozen=True)
class GraphEntry:
    """One graph of a bundle as its manifest lists it (`generator` or `vocoder`)."""

    file: str | None = None  # None: no graph (the weight-free Griffin-Lim vocoder)
    sha256: str | None = None
    bytes: int | None = None
    reference: str | None = None  # PyTorch outputs on fixed inputs, for parity checks
    reference_sha256: str | None = None
    kind: str | None = None  # the vocoder's: fourier | hifigan | griffin-lim
    precision: str | None = None  # the vocoder's own precision after `c2d quantize --vocoder-mode`
    variant: str | None = None
    export_seconds: float | None = None
    validation: Mapping[str, Any] = field(default_factory=dict)  # errors against PyTorch at export

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> GraphEntry:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in entry.items() if k in known and v is not None})

    def files(self) -> list[str]:
        return [name for name in (self.file, self.reference) if name]


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest.json, typed. runtime.bundle.read_manifest checks the schema and builds it; writers derive a
    new manifest from `as_dict()` and write it with runtime.bundle.write_manifest."""

    format_version: int
    variant: str
    generator: GraphEntry
    vocoder: GraphEntry
    precision: str = "fp32"
    source_commit: str | None = None
    created: str | None = None
    checkpoints: Mapping[str, Any] = field(default_factory=dict)
    quantization: Mapping[str, Any] | None = None  # what `c2d quantize` did and measured
    train_subset: Mapping[str, Any] | None = None  # the subnet's training subset, when not all clips
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # as written

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """From a dict whose schema runtime.bundle.check_manifest has checked."""
        known = {f.name for f in fields(cls)} - {"generator", "vocoder", "data"}
        return cls(
            generator=GraphEntry.from_dict(data["generator"]),
            vocoder=GraphEntry.from_dict(data["vocoder"]),
            data=copy.deepcopy(dict(data)),
            **{k: v for k, v in data.items() if k in known and v is not None},
        )

    def as_dict(self) -> dict[str, Any]:
        """A deep copy of the manifest as written, to derive another bundle's from."""
        return copy.deepcopy(dict(self.data))

    def files(self) -> list[str]:
        """Every file the manifest lists (graphs and references), in order."""
        return self.generator.files() + self.vocoder.files()
