"""Writing files so that a crash or an error never leaves half of one: temp file in the same folder, then rename.

stdlib only, so the runtime, the exporter and the training code share it.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def temp_path(path: Path, suffix: str = "") -> Path:
    """A hidden name beside `path`, unique per process (ranks and jobs may race). `suffix` keeps the extension that
    some writers (numpy, matplotlib) insist on."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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
