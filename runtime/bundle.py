"""The bundle format: what `c2d export` writes and the runtime reads. numpy/json only (no torch, no onnx needed).

A bundle is a folder:
  manifest.json    format version, variant, files with SHA-256 and size, validation errors, export times
  generator.onnx   the guided denoiser (inputs x, t, y, gamma; outputs eps, logits, guidance)
  vocoder.onnx     the Fourier vocoder or HiFi-GAN (log-Mel [B, 80, T] -> waveform [B, 1, T * hop]); absent for Griffin-Lim
  vocoder_reference.npz  the PyTorch vocoder's waveforms for two fixed mels (backend parity)

Every ONNX file is self-describing: its metadata_props hold the keys below as JSON values under "c2d.<key>",
read back into a typed, frozen struct with a version check (sherpa-onnx style).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from c2d.runtime.audio import MelConfig
from c2d.runtime.sde import SDEConfig

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
GENERATOR_FILE = "generator.onnx"
VOCODER_FILE = "vocoder.onnx"
KEY_PREFIX = "c2d."
VARIANTS = ("single-backbone", "single-backbone-notaps", "two-model")
VOCODERS = ("fourier", "hifigan", "griffin-lim")
LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, of a newer format, or does not describe itself."""


@dataclass(frozen=True)
class GeneratorMeta:
    format_version: int  # bundle format the file was written for
    variant: str  # one of VARIANTS
    mel: MelConfig  # front end and [-1, 1] normalisation of the model's log-Mel space
    sde: SDEConfig  # VP SDE the model was trained with
    labels: tuple[str, ...]  # class names, index = position of the one-hot input
    n_frames: int  # fixed T of x [B, 1, n_mels, T]
    default_steps: int  # steps of default_sampler used unless asked otherwise
    default_guidance: float  # guidance scale gamma used unless asked otherwise
    params: dict  # parameter counts: total and per component
    macs_per_step: int  # multiply-accumulates of one guided graph call at batch 1
    precision: str  # fp32, fp16, int8-static, ...
    source_commit: str  # git commit of the code that exported it ("unknown" outside a checkout)
    output: str = "eps"  # what the first output is: the guided noise prediction
    quantization: dict = dataclasses.field(default_factory=dict)  # mode, budget and measured errors, if quantized
    default_sampler: str = "em"  # the sampler every command runs unless asked otherwise (bundles before it: the paper's EM)
    gaussian_skip: bool = False  # eps = Gaussian denoiser + learned residual: the probability-flow ODE samplers work


@dataclass(frozen=True)
class VocoderMeta:
    format_version: int
    name: str  # e.g. "hifigan-v1-universal"
    mel: MelConfig  # the log-Mel space it expects (natural log, floor 1e-5)
    hop_length: int  # samples per frame
    sample_rate: int  # Hz of the waveform it returns
    params: int
    precision: str
    source_commit: str


_NESTED = {"mel": MelConfig, "sde": SDEConfig}


def encode_metadata(meta) -> dict[str, str]:
    """Struct -> ONNX metadata_props {"c2d.<field>": json}."""
    out = {}
    for f in dataclasses.fields(meta):
        value = getattr(meta, f.name)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        out[KEY_PREFIX + f.name] = json.dumps(value)
    out[KEY_PREFIX + "kind"] = json.dumps("generator" if isinstance(meta, GeneratorMeta) else "vocoder")
    return out


def decode_metadata(props: dict[str, str], source: str = "model"):
    """ONNX metadata_props -> GeneratorMeta or VocoderMeta; BundleError naming the missing key or newer format."""
    values = {k[len(KEY_PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(KEY_PREFIX)}
    if "kind" not in values:
        raise BundleError(f"{source} carries no c2d metadata (was it written by `c2d export`?)")
    cls = GeneratorMeta if values.pop("kind") == "generator" else VocoderMeta
    version = values.get("format_version")
    if version is None:
        raise BundleError(f"{source}: metadata has no format_version")
    if version > BUNDLE_FORMAT:
        raise BundleError(f"{source} has bundle format {version}, newer than this c2d supports ({BUNDLE_FORMAT}); upgrade c2d")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BundleError(f"{source}: required metadata key {KEY_PREFIX}{f.name} is missing")
            continue
        value = values[f.name]
        if f.name in _NESTED:
            value = _NESTED[f.name](**value)
        elif f.name == "labels":
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def read_manifest(bundle: str | Path) -> dict:
    """The bundle's manifest.json, checked for format version and the files it lists."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not a c2d bundle: {MANIFEST} not found")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    if manifest.get("format_version", 0) > BUNDLE_FORMAT:
        raise BundleError(f"{bundle} has bundle format {manifest['format_version']}, newer than this c2d supports ({BUNDLE_FORMAT}); upgrade c2d")
    for role in ("generator", "vocoder"):
        entry = manifest.get(role)
        if entry is None:
            raise BundleError(f"{path} lists no {role}")
        if entry.get("file") and not (bundle / entry["file"]).is_file():
            raise BundleError(f"{bundle} is incomplete: {role} file {entry['file']} is missing")
    return manifest
