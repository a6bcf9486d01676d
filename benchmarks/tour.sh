#!/usr/bin/env bash
# The README's tour as a newcomer runs it: clone, new virtual environment, install, then every command of the
# README's "## Tour" block in order, each timed. The log (commands, output, seconds per step, lscpu model and flags)
# goes to stdout; tee it to benchmarks/results/tour.log.
#
#   bash benchmarks/tour.sh [REPO] [WORKDIR] | tee benchmarks/results/tour.log
#
# REPO defaults to this checkout's committed HEAD; WORKDIR to a new temporary folder (removed unless KEEP=1).
# Exits non-zero naming the command that failed.
set -euo pipefail

repo="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
work="${2:-$(mktemp -d -t c2d-tour-XXXXXX)}"
python="${PYTHON:-python3}"
if [[ -z "${2:-}" && "${KEEP:-0}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi
started=$SECONDS
# the clone lives elsewhere, so FSDD's default place next to the checkout (../shared/data/fsdd) is named explicitly
if [[ -z "${C2D_DATA:-}" && -d "$repo/../shared/data/fsdd" ]]; then
    export C2D_DATA="$(cd "$repo/../shared/data/fsdd" && pwd)"
fi
echo "data: ${C2D_DATA:-the default, ../shared/data/fsdd next to the clone}"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)"
echo "flags: $(lscpu | grep -o -w -E 'amx_bf16|amx_int8|avx512_bf16|avx512_vnni|avx512f|avx2' | sort -u | tr '\n' ' ')"
echo "commit: $(git -C "$repo" rev-parse --short HEAD)"

run_step() {  # run_step COMMAND-LINE: run it with bash, time it, name it if it fails
    local start=$SECONDS
    echo "\$ $1"
    if ! bash -euo pipefail -c "$1"; then
        echo "FAILED after $((SECONDS - start)) s: $1" >&2
        exit 1
    fi
    echo "-- $((SECONDS - start)) s"
}

git clone --quiet "$repo" "$work/c2d"
cd "$work/c2d"
"$python" -m venv .venv
. .venv/bin/activate
run_step "python -m pip install --quiet --upgrade pip"
run_step "python -m pip install --quiet -e '.[train,export,openvino,test]'"
# the fenced bash block under "## Tour", comments and blank lines dropped
mapfile -t commands < <(awk '/^## Tour/{tour=1} tour && /^```bash/{inside=1; next} inside && /^```/{exit} inside' README.md | grep -v -E '^\s*(#|$)' | sed 's/ *#.*$//')
echo "tour: ${#commands[@]} commands"
tour_start=$SECONDS
for command in "${commands[@]}"; do
    run_step "$command"
done
echo "tour: all ${#commands[@]} commands passed in $((SECONDS - tour_start)) s (install included: $((SECONDS - started)) s)"
