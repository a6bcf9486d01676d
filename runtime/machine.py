"""What a measurement ran on: the machine record that every profile carries, and the part of it that keys a
deployment choice (the fingerprint). numpy-free, stdlib only, so it runs on any device.

The instruction-set features are the ones the engines pick kernels by: on x86-64 AVX2, AVX-512, VNNI, AVX-512 bf16
and AMX; on AArch64 NEON (asimd), the dot-product (asimddp), int8 matrix (i8mm), bf16 and SVE extensions. Two CPUs
with the same model name can differ here (a cloud "Intel Xeon Processor" with and without AMX), and bf16 is the
fast path on one and the slow path on the other, so the fingerprint includes them.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

X86_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# AArch64 Linux hardware capabilities: (getauxval type, bit) per feature (the kernel's hwcap.h)
AT_HWCAP, AT_HWCAP2 = 16, 26
ARM_FEATURES = {
    "asimd": (AT_HWCAP, 1),
    "asimddp": (AT_HWCAP, 20),
    "sve": (AT_HWCAP, 22),
    "sve2": (AT_HWCAP2, 1),
    "i8mm": (AT_HWCAP2, 13),
    "bf16": (AT_HWCAP2, 14),
}
ENGINES = ("onnxruntime", "openvino", "tensorrt")
FINGERPRINT_KEYS = ("cpu", "arch", "isa", "cores", "engines")  # what changes which kernels run, and how fast


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def arm_hwcaps() -> list[str] | None:
    """AArch64 features from the kernel's auxiliary vector (what an emulator reports too), or None off Linux."""
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return [name for name, (kind, bit) in ARM_FEATURES.items() if getauxval(kind) >> bit & 1]


def isa_features(arch: str | None = None, info: dict[str, str] | None = None) -> list[str]:
    """The engine-relevant instruction-set features of this CPU, in a fixed order."""
    arch = arch or platform.machine()
    info = cpuinfo() if info is None else info
    if arch in ("aarch64", "arm64"):
        caps = arm_hwcaps()
        if caps is not None:
            return caps
        flags = info.get("Features", "").split()
        return [f for f in ARM_FEATURES if f in flags]
    flags = info.get("flags", "").split()
    return [f for f in X86_FEATURES if f in flags]


def cpu_model(info: dict[str, str] | None = None) -> str:
    info = cpuinfo() if info is None else info
    return info.get("model name") or info.get("Model") or info.get("Hardware") or platform.processor() or platform.machine()


def emulation(arch: str, info: dict[str, str]) -> str | None:
    """A note when the process runs under user-mode emulation (qemu-user shows the host's /proc/cpuinfo)."""
    if arch in ("aarch64", "arm64") and info.get("vendor_id") in ("GenuineIntel", "AuthenticAMD"):
        return f"emulated: an aarch64 process on a {info['vendor_id']} x86-64 host (qemu-user); timings are not device latency"
    return None


def engine_versions() -> dict[str, str]:
    versions = {}
    for package in ENGINES:
        if importlib.util.find_spec(package) is not None:
            try:
                versions[package] = __import__(package).__version__
            except Exception as exc:  # an engine that fails to import is recorded, not fatal
                versions[package] = f"unusable ({type(exc).__name__})"
    return versions


def machine_record() -> dict:
    """CPU model, architecture, ISA features, cores, OS, Python and engine versions of this machine."""
    info = cpuinfo()
    arch = platform.machine()
    record = {
        "cpu": cpu_model(info),
        "arch": arch,
        "isa": isa_features(arch, info),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "libc": " ".join(platform.libc_ver()).strip() or None,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "hostname": platform.node(),
        "engines": engine_versions(),
    }
    note = emulation(arch, info)
    if note:
        record["emulation"] = note
    return record


def fingerprint_fields(record: dict | None = None) -> dict:
    record = machine_record() if record is None else record
    return {k: record.get(k) for k in FINGERPRINT_KEYS}


def fingerprint(record: dict | None = None) -> str:
    """16 hex digits naming this CPU model, architecture, ISA features, core count and engine versions."""
    return hashlib.sha256(json.dumps(fingerprint_fields(record), sort_keys=True).encode()).hexdigest()[:16]


def provenance() -> dict:
    """What produced a result: the command line, c2d's version, the date (UTC)."""
    import shlex
    import time

    from c2d import __version__

    argv = [Path(sys.argv[0]).name, *sys.argv[1:]]
    return {"command": shlex.join(argv), "c2d": __version__, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def load_note() -> str | None:
    """Why timings may be noisy: the 1-minute load average against the core count, if it says the CPU is shared."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return None
    cores = os.cpu_count() or 1
    if load >= 0.75 * cores:
        return f"the load average was {load:.2f} on {cores} cores: other processes were competing for the CPU"
    return None


if __name__ == "__main__":  # python -m c2d.runtime.machine: this machine's record, one line (read by benchmarks/arm64_parity.py)
    print("C2D-MACHINE " + json.dumps(machine_record()), flush=True)
