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
import math
from dataclasses import dataclass
from pathlib import Path

from c2d.runtime.audio import MelConfig
from c2d.runtime.contract import BUNDLE_FORMAT, DEPLOYMENT_FILE, MANIFEST_FILE, Manifest
from c2d.runtime.errors import C2DError
from c2d.runtime.files import describe_kind, read_json
from c2d.runtime.limits import MAX_GUIDANCE, MAX_STEPS
from c2d.runtime.sde import SDEConfig

KEY_PREFIX = "c2d."
VARIANTS = ("single-backbone", "single-backbone-notaps", "two-model", "student")
VOCODERS = ("fourier", "hifigan", "griffin-lim")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class BundleError(C2DError, RuntimeError):
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
    train_subset: dict = dataclasses.field(default_factory=dict)  # the subnet's training clips if not all (train_subset())
    parameterisation: str = "eps"  # how the network's raw output became eps: eps, gaussian-skip or edm (models/precond.py)
    distillation: dict = dataclasses.field(default_factory=dict)  # a student's: objective, conditioning, steps trained


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
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        out[KEY_PREFIX + f.name] = json.dumps(value)
    out[KEY_PREFIX + "kind"] = json.dumps("generator" if isinstance(meta, GeneratorMeta) else "vocoder")
    return out


def decode_metadata(props: dict[str, str], source: str = "model"):
    """ONNX metadata_props -> GeneratorMeta or VocoderMeta, every value checked; BundleError naming the key and the
    bad value, a missing key or a newer format."""
    values = {}
    for key, text in props.items():
        if key.startswith(KEY_PREFIX):
            try:
                values[key[len(KEY_PREFIX) :]] = json.loads(text)
            except (TypeError, ValueError, RecursionError):
                raise BundleError(f"{source}: metadata {key} is not JSON: {str(text)[:60]!r}") from None
    if "kind" not in values:
        raise BundleError(f"{source} carries no c2d metadata (was it written by `c2d export`?)")
    kind = values.pop("kind")
    if kind not in ("generator", "vocoder"):
        raise BundleError(f"{source}: metadata {KEY_PREFIX}kind = {kind!r}; expected 'generator' or 'vocoder'")
    cls = GeneratorMeta if kind == "generator" else VocoderMeta
    version = values.get("format_version")
    if version is None:
        raise BundleError(f"{source}: metadata has no format_version")
    _expect(isinstance(version, int) and not isinstance(version, bool) and version >= 1, source, "format_version", version, "an integer >= 1")
    if int(version) > BUNDLE_FORMAT:
        raise BundleError(f"{source} has bundle format {version}, newer than this c2d supports ({BUNDLE_FORMAT}); upgrade c2d")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BundleError(f"{source}: required metadata key {KEY_PREFIX}{f.name} is missing")
            continue
        kwargs[f.name] = _decode_field(cls, f.name, values[f.name], source)
    meta = cls(**kwargs)
    _check_consistent(meta, source)
    return meta


def _expect(ok: bool, source: str, key: str, value, expected: str) -> None:
    if not ok:
        raise BundleError(f"{source}: metadata {KEY_PREFIX}{key} = {json.dumps(value)[:80]} is invalid: expected {expected}")


def _is_int(v, low: int = 0, high: int = 2**62) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _is_num(v, low: float = -math.inf, high: float = math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high


_MEL_CHECKS = {
    "sample_rate": (lambda v: _is_int(v, 1000, 384_000), "an integer 1000 to 384000"),
    "n_fft": (lambda v: _is_int(v, 16, 65_536), "an integer 16 to 65536"),
    "hop_length": (lambda v: _is_int(v, 1, 65_536), "an integer >= 1"),
    "n_mels": (lambda v: _is_int(v, 1, 1024), "an integer 1 to 1024"),
    "fmin": (lambda v: _is_num(v, 0), "a number >= 0"),
    "fmax": (lambda v: _is_num(v, 1), "a number > 0"),
    "clip_seconds": (lambda v: _is_num(v, 1e-3, 600), "a number of seconds, 0.001 to 600"),
    "n_frames": (lambda v: _is_int(v, 1, 1_000_000), "an integer >= 1"),
    "log_floor": (lambda v: _is_num(v, 1e-30, 1), "a number in (0, 1]"),
    "norm_low": (_is_num, "a finite number"),
    "norm_high": (_is_num, "a finite number"),
}
_SDE_CHECKS = {
    "beta_min": (lambda v: _is_num(v, 0), "a number >= 0"),
    "beta_max": (lambda v: _is_num(v, 0), "a number >= 0"),
    "t_min": (lambda v: _is_num(v, 1e-8, 0.5), "a number in (0, 0.5]"),
}
_FIELD_CHECKS = {
    "variant": (lambda v: v in VARIANTS, f"one of {', '.join(VARIANTS)}"),
    "labels": (
        lambda v: isinstance(v, list) and 1 <= len(v) <= 1000 and all(isinstance(x, str) and x for x in v) and len(set(v)) == len(v),
        "a list of distinct non-empty names",
    ),
    "n_frames": (lambda v: _is_int(v, 1, 1_000_000), "an integer >= 1"),
    "default_steps": (lambda v: _is_int(v, 1, MAX_STEPS), f"an integer 1 to {MAX_STEPS}"),
    "default_guidance": (lambda v: _is_num(v, 0, MAX_GUIDANCE), f"a number 0 to {MAX_GUIDANCE:g}"),
    "params": (lambda v: isinstance(v, (dict, int)) and not isinstance(v, bool), "parameter counts"),
    "macs_per_step": (lambda v: _is_int(v), "an integer >= 0"),
    "precision": (lambda v: isinstance(v, str) and v, "a precision name"),
    "source_commit": (lambda v: isinstance(v, str), "a string"),
    "output": (lambda v: v == "eps", "'eps'"),
    "quantization": (lambda v: isinstance(v, dict), "an object"),
    "gaussian_skip": (lambda v: isinstance(v, bool), "true or false"),
    "train_subset": (lambda v: isinstance(v, dict), "an object"),
    "distillation": (lambda v: isinstance(v, dict), "an object"),
    "parameterisation": (lambda v: v in ("eps", "gaussian-skip", "edm"), "eps, gaussian-skip or edm"),
    "name": (lambda v: isinstance(v, str) and v, "a vocoder name"),
    "hop_length": (lambda v: _is_int(v, 1, 65_536), "an integer >= 1"),
    "sample_rate": (lambda v: _is_int(v, 1000, 384_000), "an integer 1000 to 384000"),
}


def _decode_field(cls, name: str, value, source: str):
    if name in _NESTED:
        checks = _MEL_CHECKS if name == "mel" else _SDE_CHECKS
        config = _NESTED[name]
        _expect(isinstance(value, dict), source, name, value, f"an object with {', '.join(checks)}")
        unknown = sorted(set(value) - set(checks))
        _expect(not unknown, source, f"{name}.{unknown[0] if unknown else ''}", value, f"only the keys {', '.join(checks)}")
        for key, (ok, expected) in checks.items():
            if key in value:
                _expect(ok(value[key]), source, f"{name}.{key}", value[key], expected)
        return config(**value)
    if name == "default_sampler":
        from c2d.runtime.samplers import SAMPLERS

        _expect(isinstance(value, str) and value in SAMPLERS, source, name, value, f"one of {', '.join(SAMPLERS)}")
        return value
    if name in _FIELD_CHECKS:
        ok, expected = _FIELD_CHECKS[name]
        _expect(bool(ok(value)), source, name, value, expected)
    return tuple(value) if name == "labels" else value


def _check_consistent(meta, source: str) -> None:
    """Values that are each fine but contradict one another."""
    mel = meta.mel
    if mel.fmax <= mel.fmin or mel.fmax > mel.sample_rate / 2:
        raise BundleError(
            f"{source}: metadata mel.fmax = {mel.fmax:g} must lie above fmin ({mel.fmin:g}) and at most at "
            f"half the sample rate ({mel.sample_rate / 2:g})"
        )
    if mel.n_mels > mel.n_fft // 2 + 1 or mel.hop_length > mel.n_fft or mel.norm_high <= mel.norm_low:
        raise BundleError(
            f"{source}: metadata mel is inconsistent: n_mels {mel.n_mels} must be at most n_fft/2+1 "
            f"({mel.n_fft // 2 + 1}), hop {mel.hop_length} at most n_fft, norm_high above norm_low"
        )
    if isinstance(meta, GeneratorMeta):
        if meta.n_frames != mel.n_frames:
            raise BundleError(f"{source}: metadata n_frames = {meta.n_frames} differs from mel.n_frames = {mel.n_frames}")
        if meta.sde.beta_max <= meta.sde.beta_min:
            raise BundleError(f"{source}: metadata sde.beta_max = {meta.sde.beta_max:g} must exceed beta_min = {meta.sde.beta_min:g}")
    elif meta.hop_length != mel.hop_length:
        raise BundleError(f"{source}: metadata hop_length = {meta.hop_length} differs from mel.hop_length = {mel.hop_length}")


# ---- manifest ------------------------------------------------------------------------------------------------------

_HEX = set("0123456789abcdef")
# Files a bundle folder may hold besides those its manifest lists (a bundle-local deployment profile).
EXTRA_FILES = (DEPLOYMENT_FILE,)


def _bad(path: Path, field: str, value, expected: str) -> BundleError:
    return BundleError(f"{path}: {field} = {json.dumps(value)[:80]} is invalid: expected {expected}")


def _check_name(path: Path, field: str, name) -> None:
    """A file name the bundle lists: a plain name inside the folder (no folders, no '..', nothing absolute)."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise _bad(path, field, name, "a plain file name inside the bundle folder (no '/', '..' or absolute paths)")


def _check_hash(path: Path, field: str, value) -> None:
    if not (isinstance(value, str) and len(value) == 64 and set(value) <= _HEX):
        raise _bad(path, field, value, "64 lowercase hex digits (SHA-256)")


def _check_entry(path: Path, role: str, entry) -> None:
    if not isinstance(entry, dict):
        raise _bad(path, role, entry, "an object")
    if role == "vocoder":
        if entry.get("kind") not in VOCODERS:
            raise _bad(path, "vocoder.kind", entry.get("kind"), f"one of {', '.join(VOCODERS)}")
        if entry["kind"] == "griffin-lim":
            if entry.get("file") is not None:
                raise _bad(path, "vocoder.file", entry["file"], "null for the weight-free griffin-lim vocoder")
            return
    _check_name(path, f"{role}.file", entry.get("file"))
    _check_hash(path, f"{role}.sha256", entry.get("sha256"))
    if not _is_int(entry.get("bytes"), 1):
        raise _bad(path, f"{role}.bytes", entry.get("bytes"), "the file's size in bytes")
    if entry.get("reference") is not None:
        _check_name(path, f"{role}.reference", entry["reference"])
    if entry.get("reference_sha256") is not None:
        _check_hash(path, f"{role}.reference_sha256", entry["reference_sha256"])


def check_manifest(manifest, path: Path) -> dict:
    """The manifest's schema: types, allowed values and file names, with the field and the bad value in the error."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if not _is_int(version, 1):
        raise _bad(path, "format_version", version, "an integer >= 1")
    if int(version) > BUNDLE_FORMAT:  # type: ignore[arg-type]  # _is_int checked it
        raise BundleError(f"{path.parent} has bundle format {version}, newer than this c2d supports ({BUNDLE_FORMAT}); upgrade c2d")
    if manifest.get("variant") not in VARIANTS:
        raise _bad(path, "variant", manifest.get("variant"), f"one of {', '.join(VARIANTS)}")
    for field in ("precision", "source_commit", "created"):
        if field in manifest and not isinstance(manifest[field], str):
            raise _bad(path, field, manifest[field], "a string")
    for field in ("checkpoints", "quantization", "train_subset"):
        if field in manifest and not isinstance(manifest[field], dict):
            raise _bad(path, field, manifest[field], "an object")
    for role in ("generator", "vocoder"):
        if role not in manifest:
            raise BundleError(f"{path} lists no {role}")
        _check_entry(path, role, manifest[role])
    names = listed_files(manifest)
    if len(set(names)) != len(names):
        raise BundleError(f"{path}: two roles name the same file ({', '.join(sorted(n for n in names if names.count(n) > 1))})")
    return manifest


def listed_files(manifest: dict) -> list[str]:
    """Every file name the manifest lists (models and references), in order."""
    names = []
    for role in ("generator", "vocoder"):
        for key in ("file", "reference"):
            if manifest[role].get(key):
                names.append(manifest[role][key])
    return names


def bundle_file(bundle: str | Path, name: str) -> Path:
    """The path of a file a bundle lists; BundleError if it would leave the folder or is not a regular file."""
    bundle = Path(bundle)
    _check_name(bundle / MANIFEST_FILE, "file", name)
    path = bundle / name
    root = bundle.resolve()
    if path.resolve().parent != root:
        raise BundleError(f"{bundle}: {name} points outside the bundle folder (to {path.resolve()}); refusing to follow it")
    if not path.is_file():
        what = "missing" if not path.exists() else f"{describe_kind(path)}, not a file"
        raise BundleError(f"{bundle} is incomplete: {name} is {what}")
    return path


_HASHES: dict[tuple, str] = {}  # (resolved path, size, mtime_ns, inode) -> SHA-256: verified once per process


def cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def verify_files(bundle: Path, manifest: dict) -> None:
    """Every listed file exists inside the folder with the size and SHA-256 the manifest records."""
    for role in ("generator", "vocoder"):
        entry = manifest[role]
        for key, digest in (("file", "sha256"), ("reference", "reference_sha256")):
            name = entry.get(key)
            if not name:
                continue
            path = bundle_file(bundle, name)
            if key == "file" and path.stat().st_size != entry["bytes"]:
                raise BundleError(
                    f"{path} has {path.stat().st_size} bytes, its manifest records {entry['bytes']}: the file was "
                    "changed or truncated after export; re-export the bundle or restore the file"
                )
            if entry.get(digest) and cached_sha256(path) != entry[digest]:
                raise BundleError(
                    f"{path} does not match the SHA-256 in its manifest: the file was changed or damaged after "
                    "export; re-export the bundle or restore the file"
                )


def read_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """The bundle's manifest.json, its schema checked, its files resolved inside the folder and (verify) their
    sizes and SHA-256 checked, so what runs is what was validated at export."""
    bundle = Path(bundle)
    path = bundle / MANIFEST_FILE
    if not bundle.is_dir():
        raise BundleError(f"{bundle} is not a c2d bundle: not a folder")
    if not path.is_file():
        raise BundleError(f"{bundle} is not a c2d bundle: {MANIFEST_FILE} not found")
    manifest = read_json(path, "manifest", error=BundleError)
    check_manifest(manifest, path)
    if verify:
        verify_files(bundle, manifest)
    else:
        for name in listed_files(manifest):
            bundle_file(bundle, name)
    return Manifest.from_dict(manifest)


def write_manifest(folder: str | Path, data: dict) -> Manifest:
    """Stamp the size and SHA-256 of every file `data` lists, check its schema and write it as the folder's
    manifest.json (the folder is a staging folder: its rename into place is the atomic step)."""
    folder = Path(folder)
    stamp_files(folder, data)
    check_manifest(data, folder / MANIFEST_FILE)
    (folder / MANIFEST_FILE).write_text(json.dumps(data, indent=2) + "\n")
    return Manifest.from_dict(data)


def generator_sha256(bundle: str | Path) -> str:
    """SHA-256 of the bundle's generator file as it is on disk now (what calibrations and profiles are keyed to)."""
    bundle = Path(bundle)
    return cached_sha256(bundle / str(read_manifest(bundle).generator.file))  # read_manifest has just hashed it


def stamp_files(folder: str | Path, manifest: dict) -> dict:
    """Record the size and SHA-256 of every file the manifest lists (after writing or editing them); returns it."""
    folder = Path(folder)
    for role in ("generator", "vocoder"):
        entry = manifest[role]
        if entry.get("file"):
            entry["bytes"] = (folder / entry["file"]).stat().st_size
            entry["sha256"] = file_sha256(folder / entry["file"])
        if entry.get("reference"):
            entry["reference_sha256"] = file_sha256(folder / entry["reference"])
    return manifest


def not_a_bundle(folder: Path) -> str | None:
    """None if `folder` holds a c2d bundle and nothing else (so replacing it loses nothing c2d did not write);
    else the reason it is not one."""
    try:
        manifest = read_manifest(folder, verify=False)
    except BundleError as exc:
        return str(exc)
    allowed = {MANIFEST_FILE, *manifest.files(), *EXTRA_FILES}
    others = sorted(p.name for p in folder.iterdir() if p.name not in allowed or not p.is_file() or p.is_symlink())
    return f"it also holds {', '.join(others[:3])}" if others else None
