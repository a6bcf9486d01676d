"""Profiling on a remote device over SSH: `c2d profile BUNDLE --target ssh://[user@]host[:port]`.

The host stages a runtime on the device in a temporary folder, runs the same `c2d profile` there with the
device's own engines, brings the JSON back and removes what it staged:

1. probe: the device's Python (3.10 or newer), OS, architecture, C library and free disk, in one ssh call;
2. wheels: `pip download` on the host for the device's platform tags and Python (devices often have no package
   index), into a per-platform folder of the host's cache (~/.cache/c2d/wheels) or from the user's own wheelhouse
   (--wheels DIR, offline); or, with device_index, the device's pip installs from its own index;
3. stage: one tar stream over ssh holds the wheels, c2d's runtime and CLI (no PyTorch, no checkpoints) and the
   bundle; a script on the device unpacks it and unzips the wheels into one site folder (no pip, no venv needed);
4. run: `python -m c2d profile ... --json` on the device, its output streamed back line by line;
5. fetch the JSON, then remove the staged folder (unless keep), also when anything before failed.

OpenSSH's own client does the connecting, with the user's ~/.ssh/config, keys and agent, in BatchMode: c2d never
asks for, passes or stores a password. Every failure the user can meet ends in one RemoteError line.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import io
import json
import re
import shlex
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from c2d.runtime.errors import C2DError
from c2d.runtime.files import cache_root

MIN_PYTHON = (3, 10)
CONNECT_TIMEOUT_S = 15
# accept-new: a device seen for the first time is trusted and remembered, one whose key has changed is refused
SSH_DEFAULTS = (f"ConnectTimeout={CONNECT_TIMEOUT_S}", "LogLevel=ERROR", "StrictHostKeyChecking=accept-new")
# What `c2d profile` imports on the device (the rest of each package's requirements come with it from pip).
RUNTIME_REQUIREMENTS = ("numpy", "onnxruntime", "onnx", "click", "threadpoolctl")
PINNED = ("onnxruntime", "openvino")  # the engines run at the host's versions, so both sides measure the same code
OPENVINO_REQUIREMENTS = ("openvino",)
STAGED_PACKAGES = ("c2d.cli", "c2d.runtime")  # copied from this installation, beside c2d's own __init__/__main__
STAGED_SKIP = ("__pycache__", "bundles")  # the bundle to profile is staged on its own


class RemoteError(C2DError, RuntimeError):
    """The device could not be reached, set up or run on; the message is one line saying why and what to do."""


@dataclass(frozen=True)
class Target:
    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, url: str) -> Target:
        """ssh://[user@]host[:port] -> Target; RemoteError naming what is wrong otherwise."""
        m = re.fullmatch(r"ssh://(?:([^@/:\s]+)@)?(\[[0-9a-fA-F:]+\]|[^@/:\s\[\]]+)(?::(\d+))?/?", url)
        if not m:
            raise RemoteError(f"--target {url!r}: expected ssh://[user@]host[:port] (for example ssh://pi@raspberrypi.local:22)")
        port = int(m.group(3)) if m.group(3) else None
        if port is not None and not 1 <= port <= 65535:
            raise RemoteError(f"--target {url!r}: port {port} is not 1 to 65535")
        return cls(m.group(2).strip("[]"), m.group(1), port)

    def __str__(self) -> str:
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"


def parse_ssh_options(options: Sequence[str]) -> list[str]:
    """KEY=VALUE pairs for `ssh -o`; RemoteError for anything else (so a typo is not passed on as a host name)."""
    for option in options:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*=.*", option):
            raise RemoteError(f"--ssh-option {option!r}: expected KEY=VALUE, as ssh's -o takes it (for example IdentityFile=~/.ssh/id_ed25519)")
    return list(options)


@dataclass
class Ssh:
    """Runs commands on the target with OpenSSH's client."""

    target: Target
    options: list[str] = field(default_factory=list)
    program: str = "ssh"

    def argv(self, command: str) -> list[str]:
        # ssh keeps the first value it gets for an option: BatchMode (never a password prompt) cannot be overridden,
        # the user's --ssh-option values come before c2d's defaults, and ~/.ssh/config only fills what is left.
        argv = [self.program, "-o", "BatchMode=yes"]
        for option in self.options:
            argv += ["-o", option]
        for option in SSH_DEFAULTS:
            argv += ["-o", option]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        return argv + [f"{self.target.user}@{self.target.host}" if self.target.user else self.target.host, "--", command]

    def run(self, command: str, stdin: bytes | None = None, timeout: float | None = 600) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(self.argv(command), input=stdin, capture_output=True, timeout=timeout)
        except FileNotFoundError as exc:
            raise RemoteError(f"no OpenSSH client ({self.program}) on this machine: install it (Debian: apt-get install openssh-client)") from exc
        except subprocess.TimeoutExpired as exc:
            raise RemoteError(f"{self.target} did not answer within {timeout:.0f} s") from exc
        if done.returncode == 255:
            raise RemoteError(ssh_failure(self.target, done.stderr.decode(errors="replace")))
        return done

    def stream(self, command: str, on_line: Callable[[str], None]) -> int:
        """Run `command`, passing each line it prints (stdout and stderr) to on_line as it comes; its exit status."""
        try:
            proc = subprocess.Popen(self.argv(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise RemoteError(f"no OpenSSH client ({self.program}) on this machine") from exc
        assert proc.stdout is not None
        tail: list[str] = []
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tail = (tail + [line])[-5:]
            on_line(line)
        status = proc.wait()
        if status == 255:
            raise RemoteError(ssh_failure(self.target, "\n".join(tail)))
        return status


SSH_REASONS = (
    (("Could not resolve hostname",), "cannot reach {target}: the host name does not resolve"),
    (("Connection refused",), "cannot reach {target}: the connection was refused (no SSH server on that port?)"),
    (("timed out", "No route to host", "Network is unreachable"), "cannot reach {target}: {line}"),
    (
        ("Permission denied",),
        "{target} refused the login ({line}): c2d logs in with your SSH keys and agent only, never a password; "
        "add your public key to the device's ~/.ssh/authorized_keys or pass --ssh-option IdentityFile=KEY",
    ),
    (
        ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{target}'s host key has changed since it was remembered (or is refused by your ssh settings): check the device, "
        "then remove the old key with ssh-keygen -R HOST",
    ),
)


def ssh_failure(target: Target, stderr: str) -> str:
    """One line for an ssh exit status 255 (ssh's own failure, not the remote command's)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "no message"
    for needles, message in SSH_REASONS:
        if any(n in stderr for n in needles):
            return message.format(target=target, line=line)
    return f"ssh to {target} failed: {line}"


# ---- probing the device --------------------------------------------------------------------------------------

PROBE = """
import sys
print("C2D-PROBE %d %d" % tuple(sys.version_info[:2]))
if sys.version_info >= (3, 10):
    import json, os, platform, shutil, tempfile
    where = sys.argv[1] or tempfile.gettempdir()
    free = shutil.disk_usage(where).free if os.path.isdir(where) else None
    print(json.dumps({"system": platform.system(), "arch": platform.machine(), "libc": list(platform.libc_ver()),
        "python": list(sys.version_info[:3]), "implementation": sys.implementation.name, "executable": sys.executable,
        "where": where, "free": free}))
"""


@dataclass(frozen=True)
class Device:
    system: str
    arch: str
    libc: tuple[str, str]
    python: tuple[int, int, int]
    implementation: str
    executable: str
    where: str  # the folder the staging folder is made in
    free: int | None  # bytes free there

    @property
    def python_tag(self) -> str:
        return f"{self.python[0]}{self.python[1]}"


def probe(ssh: Ssh, python: str, remote_dir: str | None) -> Device:
    """What the device runs: RemoteError when it has no such Python, or one older than 3.10."""
    py = shlex.quote(python)
    command = f"command -v {py} >/dev/null 2>&1 || {{ echo C2D-NO-PYTHON; exit 0; }}; {py} -c {shlex.quote(PROBE)} {shlex.quote(remote_dir or '')}"
    done = ssh.run(command, timeout=120)
    out = done.stdout.decode(errors="replace")
    if "C2D-NO-PYTHON" in out:
        raise RemoteError(
            f"{ssh.target} has no {python} on its PATH: install Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ there or pass --remote-python PATH"
        )
    m = re.search(r"C2D-PROBE (\d+) (\d+)", out)
    if not m:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"{python} on {ssh.target} did not run ({reason})")
    version = (int(m.group(1)), int(m.group(2)))
    if version < MIN_PYTHON:
        raise RemoteError(f"{ssh.target} runs Python {version[0]}.{version[1]} ({python}); c2d needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer there")
    info = json.loads(out[m.end() :].strip().splitlines()[0])
    if remote_dir and info["free"] is None:
        raise RemoteError(f"--remote-dir {remote_dir}: no such folder on {ssh.target}")
    return Device(
        info["system"],
        info["arch"],
        tuple(info["libc"]),
        tuple(info["python"]),
        info["implementation"],
        info["executable"],
        info["where"],
        info["free"],
    )  # type: ignore[arg-type]


def platform_tags(device: Device) -> list[str]:
    """pip's --platform tags for the device: every manylinux (glibc) or musllinux level its C library runs."""
    if device.system != "Linux":
        raise RemoteError(f"the device runs {device.system}; c2d stages a runtime on Linux devices only")
    arch = {"arm64": "aarch64"}.get(device.arch, device.arch)
    libc, version = device.libc
    if libc == "glibc":
        major, minor = (int(v) for v in version.split(".")[:2])
        return [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)] + [f"manylinux2014_{arch}"]
    return [f"musllinux_1_{m}_{arch}" for m in (2, 1)]


# ---- wheels ----------------------------------------------------------------------------------------------------


def requirements(openvino: bool) -> list[str]:
    """The device's requirements, engines pinned to this host's versions where they are installed here."""
    names = list(RUNTIME_REQUIREMENTS) + (list(OPENVINO_REQUIREMENTS) if openvino else [])
    pinned = []
    for name in names:
        try:
            version = importlib.metadata.version(name) if name in PINNED else None
        except importlib.metadata.PackageNotFoundError:
            version = None
        pinned.append(f"{name}=={version}" if version else name)
    return pinned


def wheel_folder(device: Device, reqs: Sequence[str], wheelhouse: Path | None = None) -> Path:
    """The host cache's folder for one device platform, Python, requirement set and source."""
    source = str(wheelhouse.resolve()) if wheelhouse else "index"
    key = hashlib.sha256(json.dumps([platform_tags(device)[0], device.python_tag, sorted(reqs), source]).encode()).hexdigest()[:12]
    return cache_root() / "wheels" / f"cp{device.python_tag}-{platform_tags(device)[0]}-{key}"


def download_wheels(device: Device, reqs: Sequence[str], wheelhouse: Path | None, log: Callable[[str], None]) -> list[Path]:
    """The wheels of reqs and their dependencies for the device, by pip on this host: from PyPI (or this host's pip
    configuration) into the cache, or only from `wheelhouse` when given. RemoteError naming the package that has no
    wheel for the device."""
    if device.implementation != "cpython":
        raise RemoteError(f"the device runs {device.implementation}; c2d stages CPython wheels only")
    dest = wheel_folder(device, reqs, wheelhouse)
    done = dest / ".complete"
    if done.is_file() and wheelhouse is None:  # a wheelhouse is read again every time: its contents may have changed
        return sorted(dest.glob("*.whl"))
    dest.mkdir(parents=True, exist_ok=True)
    tags = platform_tags(device)
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:", "--dest", str(dest)]
    argv += ["--python-version", ".".join(map(str, device.python[:2])), "--implementation", "cp", "--abi", f"cp{device.python_tag}"]
    for tag in tags:
        argv += ["--platform", tag]
    if wheelhouse is not None:
        argv += ["--no-index", "--find-links", str(wheelhouse)]
    log(f"wheels for cp{device.python_tag} {tags[0]}: {' '.join(reqs)}" + (f" (from {wheelhouse})" if wheelhouse else " (pip download)"))
    result = subprocess.run(argv + list(reqs), capture_output=True, text=True)
    if result.returncode != 0:
        raise RemoteError(no_wheel_line(result.stderr, device, tags, wheelhouse))
    done.write_text("\n".join(reqs) + "\n")
    return sorted(dest.glob("*.whl"))


def no_wheel_line(stderr: str, device: Device, tags: list[str], wheelhouse: Path | None) -> str:
    m = re.search(r"No matching distribution found for (\S+)", stderr) or re.search(
        r"Could not find a version that satisfies the requirement (\S+)", stderr
    )
    what = m.group(1) if m else (stderr.strip().splitlines() or ["pip failed"])[-1]
    where = f"in {wheelhouse}" if wheelhouse else "on the package index"
    return (
        f"no wheel of {what} {where} for the device (CPython {device.python[0]}.{device.python[1]}, {tags[0]}): "
        "put one in a folder and pass --wheels DIR, or let the device install from its own index (--device-index)"
    )


# ---- staging -------------------------------------------------------------------------------------------------

UNPACK = r"""
import errno, os, shutil, sys, tarfile, zipfile
dest = sys.argv[1]
site, wheels = os.path.join(dest, "site"), os.path.join(dest, "wheels")
try:
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                sys.exit("C2D-ERROR unsafe entry in the staging stream: " + member.name)
            tar.extract(member, dest, set_attrs=False)
    for name in sorted(os.listdir(wheels)) if os.path.isdir(wheels) else []:
        with zipfile.ZipFile(os.path.join(wheels, name)) as wheel:
            wheel.extractall(site)
        os.remove(os.path.join(wheels, name))
    for name in os.listdir(site) if os.path.isdir(site) else []:
        if name.endswith(".data"):
            for kind in ("purelib", "platlib"):
                inner = os.path.join(site, name, kind)
                for entry in os.listdir(inner) if os.path.isdir(inner) else []:
                    shutil.move(os.path.join(inner, entry), os.path.join(site, entry))
except OSError as exc:
    if exc.errno == errno.ENOSPC:
        print("C2D-ERROR-NOSPACE", flush=True)
        sys.exit(3)
    raise
print("C2D-STAGED", flush=True)
"""


def c2d_files() -> Iterator[tuple[str, Path]]:
    """(path in the staged site folder, file here) of c2d's runtime and CLI, as installed here (editable or not)."""
    top = Path(importlib.import_module("c2d").__file__ or "").parent
    for name in ("__init__.py", "__main__.py"):
        yield f"c2d/{name}", top / name
    models = importlib.import_module("c2d.models")
    checkpoints = importlib.import_module("c2d.models.checkpoints")
    yield "c2d/models/__init__.py", Path(models.__file__ or "")
    yield "c2d/models/checkpoints/__init__.py", Path(checkpoints.__file__ or "")  # names only; the CLI's defaults
    for package in STAGED_PACKAGES:
        root = Path(importlib.import_module(package).__path__[0])
        inside = package.replace(".", "/")
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if not any(part in STAGED_SKIP for part in rel.parts):
                yield f"{inside}/{rel.as_posix()}", path


def staged_size(wheels: Sequence[Path], folders: Mapping[str, Path]) -> int:
    """Bytes the staging folder needs at its fullest: the wheels unpacked beside the largest wheel, the folders, c2d."""
    unpacked = sum(sum(i.file_size for i in zipfile.ZipFile(w).infolist()) for w in wheels)
    largest = max((w.stat().st_size for w in wheels), default=0)
    folder_bytes = sum(p.stat().st_size for folder in folders.values() for p in folder.rglob("*") if p.is_file())
    return unpacked + sum(w.stat().st_size for w in wheels) + largest + folder_bytes + sum(p.stat().st_size for _, p in c2d_files())


def write_stage(out, wheels: Sequence[Path], folders: Mapping[str, Path]) -> None:
    """The tar stream the device unpacks: wheels/, site/c2d/..., and each folder (a bundle) under its name."""
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for w in wheels:
            tar.add(w, f"wheels/{w.name}")
        for name, path in c2d_files():
            tar.add(path, f"site/{name}")
        for name, folder in folders.items():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    tar.add(path, f"{name}/{path.relative_to(folder).as_posix()}")


@dataclass
class Staged:
    ssh: Ssh
    python: str
    folder: str  # on the device

    def remote(self, path: str) -> str:
        return f"{self.folder}/{path}"

    def python_command(self, args: Sequence[str]) -> str:
        env = f"PYTHONPATH={shlex.quote(self.remote('site'))} PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1"
        return f"cd {shlex.quote(self.folder)} && {env} {shlex.quote(self.python)} " + " ".join(shlex.quote(a) for a in args)

    def read(self, path: str) -> bytes:
        done = self.ssh.run(f"cat {shlex.quote(self.remote(path))}")
        if done.returncode != 0:
            raise RemoteError(f"the profile on {self.ssh.target} wrote no {path}")
        return done.stdout

    def remove(self) -> None:
        self.ssh.run(f"rm -rf {shlex.quote(self.folder)}", timeout=300)


def make_folder(ssh: Ssh, python: str, device: Device) -> Staged:
    script = "import sys, tempfile; print(tempfile.mkdtemp(prefix='c2d-profile-', dir=sys.argv[1]))"
    done = ssh.run(f"{shlex.quote(python)} -c {shlex.quote(script)} {shlex.quote(device.where)}")
    if done.returncode != 0:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise RemoteError(f"cannot make a folder in {device.where} on {ssh.target} ({reason}); pass --remote-dir DIR")
    return Staged(ssh, python, done.stdout.decode().strip())


def stage(staged: Staged, wheels: Sequence[Path], folders: Mapping[str, Path], device: Device) -> None:
    """Send and unpack; RemoteError when the device's disk is too small or fills up."""
    need = staged_size(wheels, folders)
    if device.free is not None and device.free < need:
        raise RemoteError(
            f"{staged.ssh.target} has {device.free / 1e6:.0f} MB free in {device.where}; staging the runtime needs {need / 1e6:.0f} MB: "
            "free some space there or pass --remote-dir DIR on a larger disk"
        )
    stream = io.BytesIO()
    write_stage(stream, wheels, folders)
    done = staged.ssh.run(
        f"{shlex.quote(staged.python)} -c {shlex.quote(UNPACK)} {shlex.quote(staged.folder)}", stdin=stream.getvalue(), timeout=1800
    )
    out = done.stdout.decode(errors="replace")
    if "C2D-ERROR-NOSPACE" in out:
        raise RemoteError(
            f"{staged.ssh.target} ran out of disk space in {device.where} while unpacking: free some space there or pass --remote-dir DIR"
        )
    if done.returncode != 0 or "C2D-STAGED" not in out:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or out.strip().splitlines() or ["no message"])[-1]
        raise RemoteError(f"unpacking on {staged.ssh.target} failed: {reason}")


def install_from_device_index(staged: Staged, reqs: Sequence[str], log: Callable[[str], None]) -> None:
    """The device's own pip installs the requirements into the staged site folder from the device's own index."""
    log(f"the device installs {' '.join(reqs)} from its own package index")
    command = staged.python_command(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", staged.remote("site"), *reqs])
    done = staged.ssh.run(command, timeout=1800)
    if done.returncode != 0:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise RemoteError(f"pip on {staged.ssh.target} could not install the runtime ({reason}); leave --device-index off to send wheels from here")


@dataclass(frozen=True)
class RemoteRun:
    target: str
    ssh_options: tuple[str, ...] = ()
    python: str = "python3"
    remote_dir: str | None = None
    wheels: Path | None = None  # a local wheelhouse (offline); None: pip download on this host
    device_index: bool = False  # the device's pip installs from its own index instead
    keep: bool = False


@contextlib.contextmanager
def staged_runtime(spec: RemoteRun, folders: Mapping[str, Path], openvino: str, log: Callable[[str], None]) -> Iterator[tuple[Staged, Device]]:
    """c2d's runtime staged on the target with `folders` (bundles) under their names; removed on the way out (also
    after an error or an interrupt) unless spec.keep. openvino: "no", "required" (--backend openvino) or "optional"
    (--backend all: where the device's platform has no OpenVINO wheel, the choice is among the other engines)."""
    ssh = Ssh(Target.parse(spec.target), parse_ssh_options(spec.ssh_options))
    device = probe(ssh, spec.python, spec.remote_dir)
    log(f"{ssh.target}: Python {'.'.join(map(str, device.python))} on {device.system} {device.arch} ({' '.join(device.libc)})")
    reqs = requirements(openvino != "no")
    wheels: list[Path] = []
    if not spec.device_index:
        try:
            wheels = download_wheels(device, reqs, spec.wheels, log)
        except RemoteError as exc:
            if openvino != "optional" or "openvino" not in str(exc):
                raise
            log(f"warning: {exc}; the device's choice is among the other engines")
            reqs = requirements(False)
            wheels = download_wheels(device, reqs, spec.wheels, log)
    staged = make_folder(ssh, spec.python, device)
    try:
        log(f"staging in {staged.folder}")
        stage(staged, wheels, folders, device)
        if spec.device_index:
            install_from_device_index(staged, reqs, log)
        yield staged, device
    finally:
        if spec.keep:
            log(f"kept {staged.folder} on {ssh.target} (--keep); remove it with: ssh {ssh.target.host} rm -rf {staged.folder}")
        else:
            try:
                staged.remove()
            except RemoteError as exc:  # the connection went away: say so, without hiding the first error
                log(f"warning: could not remove {staged.folder} on {ssh.target} ({exc})")


def run_module(staged: Staged, module: str, args: Sequence[str], log: Callable[[str], None]) -> None:
    """`python -m MODULE *args` in the staged folder, its output streamed to log; RemoteError if it fails."""
    status = staged.ssh.stream(staged.python_command(["-m", module, *args]), log)
    if status != 0:
        what = f"python -m {module} {args[0] if args else ''}".strip()
        raise RemoteError(f"`{what}` on {staged.ssh.target} failed (exit status {status}); its last lines are above")


def run_c2d(staged: Staged, args: Sequence[str], log: Callable[[str], None]) -> None:
    run_module(staged, "c2d", args, log)


def remote_profile(spec: RemoteRun, bundle: Path, profile_args: Sequence[str], openvino: str, log: Callable[[str], None]) -> dict:
    """Run `c2d profile <staged bundle> *profile_args --json` on the target; the profile it wrote, with "remote" added
    (target, staged folder, whether it was kept). Nothing stays on the device unless spec.keep."""
    with staged_runtime(spec, {"bundle": bundle}, openvino, log) as (staged, device):
        run_c2d(staged, ["profile", staged.remote("bundle"), *profile_args, "--json", staged.remote("profile.json")], log)
        result = json.loads(staged.read("profile.json"))
    result["remote"] = {"target": spec.target, "staged": staged.folder, "kept": spec.keep, "device_python": device.executable}
    return result
