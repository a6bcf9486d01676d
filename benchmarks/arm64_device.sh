#!/usr/bin/env bash
# An emulated ARM64 (aarch64) Linux device on this x86-64 machine, reachable as a `c2d profile --target`:
# a Debian bookworm arm64 root file system (debootstrap), run through qemu-user-static with binfmt_misc, behind an
# OpenSSH server on 127.0.0.1 whose logins are chrooted into it. Needs root (apt-get, mount, chroot).
#
#   bash benchmarks/arm64_device.sh start [ROOT]   # prints the --target and --ssh-option flags to use
#   bash benchmarks/arm64_device.sh stop  [ROOT]   # the SSH server, and every mount under ROOT
#   bash benchmarks/arm64_device.sh remove [ROOT]  # stop, then delete ROOT's folder (never rm -rf it by hand while mounted)
#
# Two settings make ONNX Runtime usable under emulation (found by timing one generator call, docs/profiling.md):
# - QEMU_CPU=neoverse-n1: qemu's default "max" CPU offers SVE, which ONNX Runtime's kernels then use and qemu-user
#   emulates slowly (one call of the shipped generator: 73 to 184 s with "max", 12 s with neoverse-n1 / cortex-a72);
#   Neoverse N1 is the core of AWS Graviton2 and Ampere Altra (NEON, dot product, no SVE).
# - /proc is mounted in the root, /sys is not: ONNX Runtime's cpuinfo reads the x86 host's /sys/devices/system/cpu
#   as an ARM CPU's and crashes (SIGSEGV on import); without /sys it warns and runs its generic ARM64 kernels.
set -euo pipefail
action="${1:-start}"
root="${2:-/var/tmp/c2d-arm64/root}"
state="$(dirname "$root")"
port="${C2D_ARM64_PORT:-2223}"
cpu="${C2D_ARM64_CPU:-neoverse-n1}"

mounts_under_root() {  # deepest first; debootstrap may leave the host's /dev bound in the root when it stops early
    awk -v r="$root" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r
}

stop() {
    [ -f "$state/sshd.pid" ] && kill "$(cat "$state/sshd.pid")" 2>/dev/null || true
    for m in $(mounts_under_root); do umount -l "$m" || true; done
}

remove() {  # never `rm -rf` a root with the host's /dev mounted inside: it deletes the host's device nodes
    stop
    if [ -n "$(mounts_under_root)" ]; then echo "still mounted under $root: $(mounts_under_root | tr '\n' ' ')" >&2; exit 1; fi
    rm -rf --one-file-system "$state"
}

if [ "$action" = stop ]; then stop; exit 0; fi
if [ "$action" = remove ]; then remove; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "arm64_device.sh needs root (apt-get, mount, chroot)" >&2; exit 1; }
need=()
for tool in qemu-aarch64-static debootstrap sshd ssh-keygen update-binfmts; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("$tool")
done
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap binfmt-support openssh-server >/dev/null
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || { echo "binfmt_misc has no qemu-aarch64 entry" >&2; exit 1; }
mkdir -p "$state"
if [ ! -x "$root/usr/bin/python3" ]; then
    echo "debootstrap: Debian bookworm arm64 with python3 into $root (a few minutes)"
    start=$(date +%s)
    debootstrap --arch=arm64 --variant=minbase --include=python3 bookworm "$root" http://deb.debian.org/debian >"$state/debootstrap.log" 2>&1
    echo "debootstrap took $(( $(date +%s) - start )) s"
fi
stop
mount -t proc proc "$root/proc"
[ -f "$state/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$state/host_key"
[ -f "$state/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$state/client_key"
cp "$state/client_key.pub" "$state/authorized_keys"
cat >"$state/sshd_config" <<CONFIG
Port $port
ListenAddress 127.0.0.1
HostKey $state/host_key
AuthorizedKeysFile $state/authorized_keys
PidFile $state/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
ChrootDirectory $root
SetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin QEMU_CPU=$cpu
CONFIG
mkdir -p /run/sshd
/usr/sbin/sshd -f "$state/sshd_config" -E "$state/sshd.log"
sleep 1
ssh_options=(--ssh-option "IdentityFile=$state/client_key" --ssh-option StrictHostKeyChecking=no --ssh-option UserKnownHostsFile=/dev/null)
arch=$(ssh -o BatchMode=yes -o "IdentityFile=$state/client_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -p "$port" root@127.0.0.1 uname -m)
echo "emulated device up: uname -m says $arch (qemu CPU $cpu)"
echo "--target ssh://root@127.0.0.1:$port ${ssh_options[*]}"
