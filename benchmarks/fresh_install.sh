#!/usr/bin/env bash
# What a new user does, on this machine: clone, new virtual environment, the README's two set-up commands
# (install + generate, then the tests), and a check that the generated WAV is ~1 s, not silent, not clipped.
#
#   bash benchmarks/fresh_install.sh [REPO] [WORKDIR]
#
# REPO defaults to this checkout (its committed HEAD: uncommitted changes are not part of a fresh clone);
# WORKDIR defaults to a new temporary folder, removed at the end unless KEEP=1. Exits non-zero, naming the step,
# when any step fails. Timings per step go to stdout.
set -euo pipefail

repo="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
work="${2:-$(mktemp -d -t c2d-fresh-XXXXXX)}"
python="${PYTHON:-python3}"
if [[ -z "${2:-}" && "${KEEP:-0}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi

step() {  # step NAME COMMAND...: run, time, and name the step that failed
    local name="$1"; shift
    local start=$SECONDS
    echo "== $name"
    if ! "$@"; then
        echo "FAILED: $name (after $((SECONDS - start)) s)" >&2
        exit 1
    fi
    echo "== $name: ok in $((SECONDS - start)) s"
}

check_wav() {
    python - "$1" <<'EOF'
import sys

import soundfile as sf

from c2d.runtime.audio import wave_problems

wave, rate = sf.read(sys.argv[1], dtype="float32")
problems = wave_problems(wave, rate)
print(f"{sys.argv[1]}: {len(wave) / rate:.3f} s at {rate} Hz" + ("" if not problems else ": " + "; ".join(problems)))
sys.exit(1 if problems else 0)
EOF
}

step "clone $repo" git clone --quiet "$repo" "$work/c2d"
cd "$work/c2d"
step "new venv ($($python --version 2>&1))" "$python" -m venv .venv
. .venv/bin/activate
step "upgrade pip" python -m pip install --quiet --upgrade pip
# The README's first command, split at its && so that a failure names the half that failed.
step "install (README)" python -m pip install --quiet -e '.[train,export,openvino,test]'
step "generate (README)" c2d generate --digit 7 -o seven.wav --quiet
step "check seven.wav" check_wav seven.wav
step "tests (README)" python -m pytest -q
echo "fresh install: all steps passed in $work"
