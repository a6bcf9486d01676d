"""benchmarks/arm64_device.sh stop/remove: every mount under the emulated device's root is undone before its folder is
deleted, so a root that still has a file system mounted inside (debootstrap can leave the host's /dev bound there)
never takes the host's files with it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "arm64_device.sh"


def mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


@pytest.fixture
def root_with_mounts(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if missing := [tool for tool in ("mount", "umount", "mountpoint", "awk") if shutil.which(tool) is None]:
        pytest.skip(f"no {', '.join(missing)} on this machine")
    root = tmp_path / "device" / "root"
    (root / "dev").mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "dev")], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    (root / "dev" / "shm").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "dev" / "shm")], check=True)
    yield root
    for m in (root / "dev" / "shm", root / "dev"):
        if mounted(m):
            subprocess.run(["umount", "-l", str(m)])


def test_remove_unmounts_everything_under_the_root_first_and_keeps_the_mounted_files(root_with_mounts, tmp_path):
    root = root_with_mounts
    keep = tmp_path / "outside.txt"
    keep.write_text("not the device's")
    (root / "dev" / "shm" / "inside").write_text("x")
    res = subprocess.run(["bash", str(SCRIPT), "stop", str(root)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not mounted(root / "dev") and (root / "dev").is_dir()  # stop undoes the mounts, deletes nothing
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "dev")], check=True)
    res = subprocess.run(["bash", str(SCRIPT), "remove", str(root)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not root.parent.exists() and keep.read_text() == "not the device's"
