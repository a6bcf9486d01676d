"""`c2d profile --target ssh://...`: against a real OpenSSH server on 127.0.0.1, started here with throw-away keys.

The "device" is this machine reached over SSH, running a Python that has no c2d installed: everything it runs
was staged by c2d. Skipped with a reason where sshd or ssh-keygen is missing (.ci/run installs openssh-server).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from c2d.cli import main
from c2d.runtime.remote import Device, RemoteError, Target, parse_ssh_options, platform_tags, ssh_failure

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
DEVICE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # the interpreter under this venv: no c2d in it
needs_sshd = pytest.mark.skipif(not (Path(SSHD).is_file() and shutil.which("ssh-keygen") and shutil.which("ssh")), reason="no OpenSSH server here")


def test_targets_parse_and_bad_ones_are_refused():
    assert Target.parse("ssh://pi@board.local:2222") == Target("board.local", "pi", 2222)
    assert Target.parse("ssh://10.0.0.7") == Target("10.0.0.7")
    assert Target.parse("ssh://me@[::1]:22") == Target("::1", "me", 22)
    assert str(Target("h", "u", 2)) == "ssh://u@h:2"
    for bad in ("board.local", "ssh://", "ssh://a@b@c", "ssh://host:99999", "http://host", "ssh://host:-1"):
        with pytest.raises(RemoteError, match="--target"):
            Target.parse(bad)


def test_ssh_options_are_key_value_pairs():
    assert parse_ssh_options(["IdentityFile=/k", "StrictHostKeyChecking=accept-new"]) == ["IdentityFile=/k", "StrictHostKeyChecking=accept-new"]
    for bad in ("IdentityFile", "-oProxyCommand=x", "=x"):
        with pytest.raises(RemoteError, match="KEY=VALUE"):
            parse_ssh_options([bad])


def device(system="Linux", arch="aarch64", libc=("glibc", "2.31")) -> Device:
    return Device(system, arch, libc, (3, 11, 2), "cpython", "/usr/bin/python3", "/tmp", 10**9)


def test_platform_tags_cover_every_manylinux_level_the_device_runs():
    tags = platform_tags(device())
    assert tags[0] == "manylinux_2_31_aarch64" and "manylinux_2_17_aarch64" in tags and tags[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_32_aarch64" not in tags
    assert platform_tags(device(arch="arm64", libc=("", "")))[0] == "musllinux_1_2_aarch64"
    with pytest.raises(RemoteError, match="Linux devices only"):
        platform_tags(device(system="Darwin"))


@pytest.mark.parametrize(
    "stderr, expected",
    [
        ("ssh: connect to host 127.0.0.1 port 9: Connection refused", "connection was refused"),
        ("ssh: Could not resolve hostname nowhere: Name or service not known", "does not resolve"),
        ("root@127.0.0.1: Permission denied (publickey).", "never a password"),
        ("Host key verification failed.", "ssh-keygen -R"),
        ("ssh: connect to host 10.255.255.1 port 22: Connection timed out", "cannot reach"),
    ],
)
def test_each_ssh_failure_is_one_line_saying_what_to_do(stderr, expected):
    line = ssh_failure(Target("h"), stderr)
    assert expected in line and "\n" not in line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An OpenSSH server on 127.0.0.1 that lets this user in with a throw-away key; the device's c2d cache is private."""
    if not (Path(SSHD).is_file() and shutil.which("ssh-keygen")):
        pytest.skip("no OpenSSH server here (apt-get install openssh-server)")
    root = tmp_path_factory.mktemp("sshd")
    host_key, key, other = keygen(root / "host_key"), keygen(root / "client_key"), keygen(root / "other_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = free_port()
    (root / "device-cache").mkdir()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        f"PidFile {root / 'sshd.pid'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PermitRootLogin prohibit-password\nSetEnv C2D_CACHE={root / 'device-cache'}\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start here: {proc.stderr.read().decode()[-300:]}")
        time.sleep(0.1)
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    yield {"root": root, "port": port, "key": key, "other": other, "user": user}
    proc.terminate()
    proc.wait(timeout=10)


def ssh_args(sshd, key=None, port=None) -> list[str]:
    """The issue's form: the key and nothing else about the host (c2d remembers a new host's key, accept-new), with
    the known-hosts file kept in the test's folder."""
    args = ["--target", f"ssh://{sshd['user']}@127.0.0.1:{port or sshd['port']}"]
    for option in (f"IdentityFile={key or sshd['key']}", "IdentitiesOnly=yes", f"UserKnownHostsFile={sshd['root'] / 'known_hosts'}"):
        args += ["--ssh-option", option]
    return args + ["--remote-python", DEVICE_PYTHON]


@pytest.fixture(scope="module")
def device_wheels(tmp_path_factory):
    """The device's wheels, fetched once by pip (from its cache when warm); skipped where no package index answers."""
    from c2d.runtime.remote import RUNTIME_REQUIREMENTS, requirements

    folder = tmp_path_factory.mktemp("wheels")
    reqs = requirements(openvino=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(folder), *reqs], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"pip could not fetch {', '.join(RUNTIME_REQUIREMENTS)} here: {done.stderr.strip()[-200:]}")
    return folder


def staging_left(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith("c2d-profile-")]


@needs_sshd
@pytest.mark.slow
def test_profile_on_a_target_comes_back_from_the_target_and_leaves_nothing(sshd, device_wheels, tmp_path):
    stage_in = tmp_path / "device-tmp"
    stage_in.mkdir()
    out, md = tmp_path / "out.json", tmp_path / "out.md"
    args = ["profile", *ssh_args(sshd), "--remote-dir", str(stage_in), "--wheels", str(device_wheels)]
    res = CliRunner().invoke(main, args + ["--steps", "3", "--threads", "1", "--iterations", "6", "--json", str(out), "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    p = json.loads(out.read_text())
    assert p["machine"]["python_executable"] == DEVICE_PYTHON  # the device's interpreter ran it, from the staged folder
    assert p["bundle"].startswith(str(stage_in / "c2d-profile-")) and p["remote"]["target"].endswith(f":{sshd['port']}")
    assert p["step_ms"]["n"] == 6 and all(p["step_ms"][k] > 0 for k in ("p50", "p90", "p99")) and p["runs"] == 2
    assert (
        p["provenance"]["c2d"] and p["generator_sha256"] and "c2d profile" in p["provenance"]["command"] or "__main__" in p["provenance"]["command"]
    )
    assert "p99" in md.read_text() and staging_left(stage_in) == []
    host_key = (sshd["root"] / "host_key.pub").read_text().split()[1]
    assert host_key in (sshd["root"] / "known_hosts").read_text()  # a new device's key is remembered (accept-new)


@needs_sshd
def test_a_changed_host_key_is_refused_in_one_line(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    other = (sshd["root"] / "other_key.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{sshd['port']} {other[0]} {other[1]}\n")  # another key remembered for this host
    args = ssh_args(sshd)
    args[args.index(f"UserKnownHostsFile={sshd['root'] / 'known_hosts'}")] = f"UserKnownHostsFile={known}"
    line = run_failing(args)
    assert "host key has changed" in line and "ssh-keygen -R" in line


@needs_sshd
@pytest.mark.slow
def test_the_deployment_choice_on_a_target_goes_to_the_devices_cache(sshd, device_wheels, tmp_path):
    stage_in = tmp_path / "device-tmp"
    stage_in.mkdir()
    args = ["profile", *ssh_args(sshd), "--remote-dir", str(stage_in), "--wheels", str(device_wheels), "--backend", "all", "--threads", "1"]
    res = CliRunner().invoke(main, args + ["--steps", "2", "--json", str(tmp_path / "all.json")])
    assert res.exit_code == 0, res.output
    p = json.loads((tmp_path / "all.json").read_text())
    assert p["choice"] and Path(p["path"]).parent == sshd["root"] / "device-cache" / "deployments" and Path(p["path"]).is_file()
    assert p["machine"]["isa"] is not None and "max_step_error_95" in next(iter(p["candidates"].values()))["gate"]
    assert staging_left(stage_in) == []


def run_failing(args: list[str]) -> str:
    res = CliRunner().invoke(main, ["profile", *args, "--steps", "2"])
    assert res.exit_code == 1, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("Error: ") and "Traceback" not in res.output
    return line


@needs_sshd
def test_an_unreachable_device_is_one_line(sshd, tmp_path):
    line = run_failing(ssh_args(sshd, port=free_port()))
    assert "cannot reach" in line and "refused" in line


@needs_sshd
def test_a_refused_key_is_one_line(sshd):
    line = run_failing(ssh_args(sshd, key=sshd["other"]))
    assert "refused the login" in line and "never a password" in line


@needs_sshd
def test_no_python_or_an_old_one_on_the_device_is_one_line(sshd, tmp_path):
    args = ssh_args(sshd)[:-1]
    assert "has no python9.99" in run_failing(args + ["python9.99"])
    old = tmp_path / "python3.8"
    old.write_text("#!/bin/sh\necho C2D-PROBE 3 8\n")
    old.chmod(0o755)
    assert "runs Python 3.8" in run_failing(args + [str(old)])


@needs_sshd
def test_no_wheel_for_the_device_is_one_line_and_nothing_is_staged(sshd, tmp_path):
    stage_in, empty = tmp_path / "device-tmp", tmp_path / "empty-wheelhouse"
    stage_in.mkdir()
    empty.mkdir()
    line = run_failing(ssh_args(sshd) + ["--remote-dir", str(stage_in), "--wheels", str(empty)])
    assert "no wheel of" in line and "--wheels DIR" in line and staging_left(stage_in) == []


@needs_sshd
@pytest.mark.slow
def test_a_full_disk_on_the_device_is_one_line_and_nothing_is_left(sshd, device_wheels, tmp_path):
    small = tmp_path / "small-disk"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        line = run_failing(ssh_args(sshd) + ["--remote-dir", str(small), "--wheels", str(device_wheels)])
        assert "MB free" in line and "--remote-dir" in line and staging_left(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_backend_all_on_a_platform_without_openvino_wheels_chooses_among_the_other_engines(monkeypatch):
    from c2d.runtime import remote

    calls, logged = [], []

    def download(device_, reqs, wheelhouse, log):
        calls.append(list(reqs))
        if any(r.startswith("openvino") for r in reqs):
            raise RemoteError("no wheel of openvino==2026.4.1 on the package index for the device (CPython 3.11, manylinux_2_31_armv7l)")
        return []

    monkeypatch.setattr(remote, "probe", lambda *a: device())
    monkeypatch.setattr(remote, "download_wheels", download)
    monkeypatch.setattr(remote, "make_folder", lambda ssh, python, dev: remote.Staged(ssh, python, "/tmp/c2d-profile-x"))
    monkeypatch.setattr(remote, "stage", lambda *a: None)
    monkeypatch.setattr(remote.Staged, "remove", lambda self: None)
    spec = remote.RemoteRun("ssh://board")
    with remote.staged_runtime(spec, {}, "optional", logged.append):
        pass
    assert any("openvino" in r for r in calls[0]) and not any("openvino" in r for r in calls[1])
    assert any(line.startswith("warning: no wheel of openvino") for line in logged)
    calls.clear()
    with pytest.raises(RemoteError, match="openvino"), remote.staged_runtime(spec, {}, "required", logged.append):
        pass
    assert len(calls) == 1


def test_threads_for_a_target_are_checked_on_the_device_not_here():
    res = CliRunner().invoke(main, ["profile", "--threads", "4096"])
    assert res.exit_code == 2 and "--threads" in res.output  # more than this machine's cores
    res = CliRunner().invoke(main, ["profile", "--threads", "4096", "--target", "ssh://nowhere.invalid:1", "--ssh-option", "ConnectTimeout=2"])
    assert "--threads" not in res.output and "cannot reach" in res.output  # accepted, then the device is not there


@needs_sshd
@pytest.mark.slow
def test_the_device_can_install_the_runtime_from_its_own_index(sshd, tmp_path):
    stage_in = tmp_path / "device-tmp"
    stage_in.mkdir()
    args = ["profile", *ssh_args(sshd), "--remote-dir", str(stage_in), "--device-index", "--steps", "2", "--threads", "1"]
    res = CliRunner().invoke(main, args + ["--json", str(tmp_path / "p.json")])
    if res.exit_code != 0 and "could not install" in res.output:
        pytest.skip(f"the device's pip reaches no package index here: {res.output.strip().splitlines()[-1]}")
    assert res.exit_code == 0, res.output
    assert "from its own package index" in res.output and json.loads((tmp_path / "p.json").read_text())["step_ms"]["n"] == 2
    assert staging_left(stage_in) == []
