"""Writing outputs so that an error, a full disk or a signal never leaves half of one, and never destroys what a
path held unless c2d wrote it. stdlib only, so the runtime, the exporter and the training code share it.

- One file: a temporary name in the target's folder, then one rename (`atomic_path`).
- Several files: all staged first, then renamed together with SIGINT/SIGTERM held off; if one rename fails, the
  files already replaced are restored from hard-linked backups (`atomic_files`): all or nothing.
- A symbolic link is written through (its target is replaced); a folder, a device, a FIFO or a socket in the way is
  refused with an `OutputError` naming it.
- Folders (bundles, calibration recordings) are swapped in whole (`replace_dir`), and only over a folder that the
  caller recognised as its own kind.
- `raise_on_signals` turns SIGTERM (and SIGINT) into an exception, so `finally` blocks remove temporary files; the
  CLI then exits 143 (130).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from c2d.runtime.errors import C2DError

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class OutputError(C2DError, RuntimeError):
    """An output c2d refuses to write: something that is not a regular file in the way, or a folder of another kind."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (a BaseException, like KeyboardInterrupt, so no `except Exception` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_deferred: dict[str, Any] = {"depth": 0, "pending": None}  # signals_deferred's state, read by the handler


def raise_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise Interrupted in the main thread (a no-op outside it); inside
    signals_deferred they are held until it ends."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, _frame):
        if _deferred["depth"]:
            _deferred["pending"] = signum
            return
        raise Interrupted(signum)

    for sig in _SIGNALS:
        signal.signal(sig, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for a short critical section; one that came meanwhile is raised when it ends.
    (Done in the Python handler, not with pthread_sigmask: the engines' worker threads would still take the signal.)"""
    _deferred["depth"] += 1
    try:
        yield
    finally:
        _deferred["depth"] -= 1
    if not _deferred["depth"] and _deferred["pending"] is not None:
        pending, _deferred["pending"] = _deferred["pending"], None
        raise Interrupted(pending)


def describe_kind(path: Path) -> str:
    mode = path.lstat().st_mode
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def output_target(path: str | os.PathLike) -> Path:
    """The regular file that writing `path` replaces: a symbolic link is followed to its target; OutputError if
    something other than a regular file (or nothing) is there, or the folder it goes in is not a folder."""
    path = Path(path)
    try:
        target = path.resolve() if path.is_symlink() else path
    except (RuntimeError, OSError) as exc:  # a symbolic link loop
        raise OutputError(f"cannot write {path}: {exc}") from exc
    if target.exists() and not target.is_file():
        via = f" (the target of the link {path})" if target != path else ""
        raise OutputError(f"{target}{via} is {describe_kind(target)}, not a regular file; c2d writes only regular files")
    _check_nearest_parent(target, path)
    return target


def real(path: str | os.PathLike) -> Path:
    """The absolute, symlink-free path that `path` names, whether or not it exists yet (a symlink loop is an
    OutputError, not a RuntimeError)."""
    try:
        return Path(os.path.realpath(Path(path).expanduser()))
    except (OSError, RuntimeError) as exc:
        raise OutputError(f"cannot resolve {path}: {exc}") from exc


def check_outputs_apart(
    outputs: dict[str, str | os.PathLike | None], inputs: dict[str, str | os.PathLike | None], folder_outputs: tuple[str, ...] = ()
) -> None:
    """Refuse, before anything is written, an output that would destroy an input or another output: an output that is
    an input, lies inside an input folder (a bundle, a calibration folder), or, for the outputs named in
    `folder_outputs` (a folder replaced as a whole), holds an input; and two outputs that are one file.
    Keys are what the user typed (-o, --json, ...); None entries are skipped. OutputError names both."""
    outs = {name: real(p) for name, p in outputs.items() if p is not None}
    ins = {name: real(p) for name, p in inputs.items() if p is not None}
    for out_name, out in outs.items():
        for in_name, src in ins.items():
            if out == src:
                raise OutputError(
                    f"{out_name} {outputs[out_name]} is the input {in_name} {inputs[in_name]}; writing it would "
                    "destroy what is being read: choose another output"
                )
            if src in out.parents and src.is_dir():
                raise OutputError(
                    f"{out_name} {outputs[out_name]} lies inside the input {in_name} {inputs[in_name]}; c2d never "
                    "writes into what it reads: choose an output outside it"
                )
            if out_name in folder_outputs and out in src.parents:
                raise OutputError(
                    f"{out_name} {outputs[out_name]} would replace the folder that holds the input {in_name} "
                    f"{inputs[in_name]}: choose another output folder"
                )
    seen: dict[Path, str] = {}
    for out_name, out in outs.items():
        if out in seen:
            raise OutputError(f"{seen[out]} and {out_name} name the same file {outputs[out_name]}: give each output its own path")
        seen[out] = out_name


def _check_nearest_parent(target: Path, asked: Path) -> None:
    """The nearest existing ancestor of `target` must be a folder (mkdir creates the rest)."""
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot write {asked}: {parent} is {describe_kind(parent)}, not a folder")
            return


NAME_MAX = 255  # bytes in one file name on the filesystems c2d writes to
HIDDEN_ROOM = 40  # what a hidden name adds around the output's name: ".", ".PID.tmp.wav", ".tmp-PID"


def hidden_stem(name: str) -> str:
    """The output's name inside its hidden temporary names, or, when that would make them longer than a file name may
    be (a legal 254-byte output name), a digest of it."""
    if len(name.encode()) + HIDDEN_ROOM <= NAME_MAX:
        return name
    return "c2d-" + hashlib.sha256(name.encode()).hexdigest()[:24]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's live process, or a number no process has: leave it be
    return True


def remove_stale_leftovers(target: Path) -> list[Path]:
    """Remove what an earlier c2d process killed mid-write (kill -9, power cut) left beside `target`: its hidden
    temporary files (.NAME.PID.tmp*), backups (.NAME.PID.bak), staging and old folders (.NAME.tmp-PID, .NAME.old-PID)
    whose process PID is gone. Leftovers of a live process are kept; so is anything of another user. Returns what
    was removed."""
    folder = target.parent
    if not folder.is_dir():
        return []
    pattern = re.compile(r"^\." + re.escape(hidden_stem(target.name)) + r"\.(?:(\d+)\.(?:tmp.*|bak)|(?:tmp|old)-(\d+))$")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if not match:
            continue
        pid = int(match.group(1) or match.group(2))
        try:
            if pid == os.getpid() or _pid_alive(pid) or entry.lstat().st_uid != os.getuid():
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed


def temp_path(path: Path, suffix: str = "") -> Path:
    """A hidden name beside `path`, unique per process (ranks and jobs may race). `suffix` keeps the extension that
    some writers (numpy, matplotlib) insist on."""
    return path.with_name(f".{hidden_stem(path.name)}.{os.getpid()}.tmp{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path` (or a link's target), on failure or a
    signal it is removed."""
    target = output_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(target)
    tmp = temp_path(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_files(paths: Sequence[str | os.PathLike], suffix: str = "") -> Iterator[list[Path]]:
    """Yield one temporary path per output; when the block succeeds all outputs are replaced, else none is."""
    targets = [output_target(p) for p in paths]
    if len(set(targets)) != len(targets):
        raise OutputError("two outputs resolve to the same file: " + ", ".join(str(t) for t in targets if targets.count(t) > 1))
    for parent in {t.parent for t in targets}:
        parent.mkdir(parents=True, exist_ok=True)
    for target in targets:
        remove_stale_leftovers(target)
    tmps = [temp_path(t, suffix) for t in targets]
    try:
        yield tmps
        missing = [t for t in tmps if not t.is_file()]
        if missing:
            raise OutputError(f"internal: {missing[0]} was not written")
        with signals_deferred():
            _commit_all(tmps, targets)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _backup(target: Path) -> Path | None:
    """A hard link (else a copy) of an existing target, to restore it if the commit fails; None if none exists."""
    if not target.exists():
        return None
    backup = target.with_name(f".{hidden_stem(target.name)}.{os.getpid()}.bak")
    backup.unlink(missing_ok=True)
    try:
        os.link(target, backup)
    except OSError:
        shutil.copy2(target, backup)
    return backup


def _commit_all(tmps: list[Path], targets: list[Path]) -> None:
    done: list[tuple[Path, Path | None]] = []
    try:
        for tmp, target in zip(tmps, targets):
            backup = _backup(target)
            try:
                os.replace(tmp, target)
            except BaseException:
                if backup is not None:
                    backup.unlink(missing_ok=True)
                raise
            done.append((target, backup))
    except BaseException:
        for target, backup in reversed(done):
            if backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        raise
    for _, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_output_dir(out: Path, is_own_kind, what: str) -> None:
    """A folder output may replace only nothing, an empty folder, or a folder `is_own_kind(out)` recognises
    (returns None if it does, else the reason it does not)."""
    if out.is_symlink():
        raise OutputError(f"{out} is a symbolic link; give the folder it points to")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is {describe_kind(out)}, not a folder")
    _check_nearest_parent(out, out)
    if out.is_dir() and any(out.iterdir()):
        reason = is_own_kind(out)
        if reason is not None:
            raise OutputError(f"refusing to replace {out}: it is not a {what} ({reason}); choose another folder or empty it")


def staging_dir(out: Path) -> Path:
    """A fresh hidden sibling folder to build `out` in (same filesystem, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(out)
    tmp = out.with_name(f".{hidden_stem(out.name)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def replace_dir(tmp: Path, out: Path) -> None:
    """Swap a finished folder in: an existing `out` is replaced only now, after everything succeeded, and is back
    in place if the swap fails."""
    old = out.with_name(f".{hidden_stem(out.name)}.old-{os.getpid()}")
    with signals_deferred():
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old.exists():
                os.replace(old, out)
            raise
    shutil.rmtree(old, ignore_errors=True)


class InputError(C2DError, ValueError):
    """An input or cache file c2d will not read: not a regular file, too large, not JSON, nested too deeply."""


MAX_JSON_BYTES = 16 << 20  # every JSON file c2d reads (manifests, profiles, recordings' descriptions) is far smaller
MAX_JSON_DEPTH = 32


def read_json(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_JSON_BYTES, error: type[Exception] = InputError):
    """Parse a JSON file defensively: a regular file only (a FIFO or a device is refused without opening it), at most
    max_bytes, nesting at most MAX_JSON_DEPTH deep, numbers Python can hold; `error` (default InputError) naming the
    file and the problem otherwise."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise error(f"the {what} {path} is {describe_kind(path)}, not a regular file")
    if info.st_size > max_bytes:
        raise error(f"the {what} {path} is {info.st_size:,} bytes, more than a {what} ever holds ({max_bytes:,})")
    try:
        with open(path, "rb") as handle:
            value = json.loads(handle.read(max_bytes + 1).decode("utf-8"))
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit integer
        raise error(f"the {what} {path} is not valid JSON ({str(exc)[:200]})") from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise error(f"the {what} {path} nests more than {MAX_JSON_DEPTH} levels deep; it is not a c2d {what}")
    return value


def _depth(value, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()], default=level + 1)
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value], default=level + 1)
    return level


CACHE_ENV = "C2D_CACHE"


def cache_root() -> Path:
    """c2d's per-user cache: $C2D_CACHE, else ~/.cache/c2d (features, distillation sets, deployment profiles)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "c2d")


def pyplot():
    """matplotlib.pyplot on the Agg backend; ImportError names the package to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install matplotlib") from exc
    return plt


def save_figure(fig, path: str | os.PathLike) -> None:
    """PNG at `path`, atomically; closes the figure."""
    plt = pyplot()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
