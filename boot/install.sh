#!/usr/bin/env bash
# Install the project into .venv (created on first use). A no-op when the install is current.
#
# Used by runsv.sh and smoke_test.sh, so a new machine needs no other set-up command.
# By default every package gets the exact version of the tested lock, boot/constraints.txt (the
# versions the whole test suite last passed with; python3 boot/relock.py refreshes it), so a fresh
# install today and next month get the same known-good set. pyproject.toml keeps version ranges.
# Environment:
#   PYTHON              the Python (3.10+) to build .venv with (default: python3)
#   AGENT_NO_LOCK=1     ignore boot/constraints.txt: the newest versions pyproject.toml allows
#   AGENT_TORCH_SPEC    torch requirement pre-installed when .venv has no torch (default: the lock's
#                       torch pin); a torch already in .venv is kept, whatever its version
#   AGENT_TORCH_INDEX   a package index for torch, e.g. https://download.pytorch.org/whl/cpu on a
#                       machine without an NVIDIA GPU (PyPI's Linux torch is the multi-GB CUDA build)
#   CMAKE_ARGS          passed to the llama-cpp-python build; set to -DGGML_CUDA=on automatically
#                       when an NVIDIA GPU (nvidia-smi -L) and nvcc are found and CMAKE_ARGS is unset
# It talks on stderr: one line per step with the time since the start, pip's own output (with its
# progress bars for large downloads when stderr is a terminal), a line every 30 s while llama.cpp
# compiles, and a closing line with the total. A failed step ends with what to do.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.install-stamp"
lock="$root/boot/constraints.txt"
python="${PYTHON:-python3}"

say() { printf '[install %d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }
stop() { say "$1"; shift; say "what to do: $*"; exit 1; }

if ! command -v "$python" >/dev/null 2>&1; then
    stop "no '$python' found" "install Python 3.10 or newer, or set PYTHON=/path/to/python3"
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    stop "$("$python" --version 2>&1) is too old: Python 3.10 or newer is needed" \
        "set PYTHON=/path/to/python3.10-or-newer"
fi

use_lock=1
if [ "${AGENT_NO_LOCK:-}" = 1 ] || [ ! -f "$lock" ]; then
    use_lock=0
fi
# the stamp covers what decides the install: a changed lock (or switching it off) installs again
want="$( { cat "$root/pyproject.toml" "$root/boot/install.sh"; [ "$use_lock" = 1 ] && cat "$lock" || echo no-lock; } \
    | sha256sum | cut -c1-16)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$venv/bin/python" -c 'import llama_cpp, fastapi, torch, core' >/dev/null 2>&1; then
    exit 0
fi
SECONDS=0

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    "$python" -m venv "$venv" || stop "could not create a virtual environment" \
        "on Debian/Ubuntu: apt-get install python3-venv; then run this again"
fi
rm -f "$stamp"  # until this run has finished, the install is not current

# The lock without torch: torch is installed on its own (its build depends on the machine, see
# AGENT_TORCH_SPEC/AGENT_TORCH_INDEX), and a torch already in .venv is never swapped for the lock's.
constraints=()
if [ "$use_lock" = 1 ]; then
    grep -v -i -E '^torch[[:space:]]*==' "$lock" > "$venv/.constraints.txt"
    constraints=(-c "$venv/.constraints.txt")
    say "using the tested lock boot/constraints.txt (AGENT_NO_LOCK=1 installs the newest allowed versions instead)"
else
    say "AGENT_NO_LOCK=1 or no boot/constraints.txt: installing the newest versions pyproject.toml allows"
fi

# pip's output: straight to a terminal (its progress bars show); in a log, without the lines that
# only say that nothing needed doing
pip_run() {
    if [ -t 2 ]; then
        "$venv/bin/python" -m pip "$@" >&2
    else
        "$venv/bin/python" -m pip "$@" 2>&1 \
            | sed -u -e '/^Requirement already satisfied/d' -e "/^WARNING: Location '.*' is ignored/d" >&2
    fi
}
# a failed pip step: what it was, then what to do
pip_failed() {
    stop "$1 failed after ${SECONDS}s (pip's message is above)" \
        "a network error: run again (finished downloads are cached); a version conflict or a package missing \
for this Python ($("$venv/bin/python" --version 2>&1)): AGENT_NO_LOCK=1 bash boot/install.sh; \
a broken .venv: rm -rf .venv and run again"
}

say "updating pip"
"$venv/bin/python" -m pip install --quiet --upgrade pip "${constraints[@]}" >&2 || pip_failed "updating pip"

# torch first, so the project's 'torch>=…' is already met and pip keeps what is installed.
if ! "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
    locked_torch="$( { [ "$use_lock" = 1 ] && grep -i -E '^torch[[:space:]]*==' "$lock" | head -n 1; } || true)"
    spec="${AGENT_TORCH_SPEC:-${locked_torch:-torch==2.13.0}}"
    say "installing $spec (the largest download: hundreds of MB for the CPU build, GBs for CUDA)"
    index=()
    [ -n "${AGENT_TORCH_INDEX:-}" ] && index=(--index-url "$AGENT_TORCH_INDEX")
    pip_run install "$spec" "${index[@]}" "${constraints[@]}" || pip_failed "installing $spec"
fi

# CUDA only when there is both a GPU to run on and a compiler for it (a CUDA toolkit alone, as on
# many CI images, would make a build that takes far longer and cannot be used).
if [ -z "${CMAKE_ARGS:-}" ] && command -v nvcc >/dev/null 2>&1 \
    && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    export CMAKE_ARGS="-DGGML_CUDA=on"
    say "NVIDIA GPU and nvcc found: building llama-cpp-python with CUDA (CMAKE_ARGS=$CMAKE_ARGS)"
fi
if ! "$venv/bin/python" -c 'import llama_cpp' >/dev/null 2>&1; then
    say "compiling llama.cpp (llama-cpp-python) — usually 4–8 minutes on 2 cores;" \
        "seconds when pip has the wheel cached"
    # a line every 30 s, so a long compile is not mistaken for a hang; its sleep goes with it (a sleep
    # left behind would hold the caller's pipe open)
    (
        trap 'kill "$nap" 2>/dev/null; exit 0' TERM
        while :; do
            sleep 30 & nap=$!
            wait "$nap"
            say "… still installing llama-cpp-python"
        done
    ) &
    ticker=$!
    trap 'kill "$ticker" 2>/dev/null || true' EXIT
    llama_rc=0
    pip_run install llama-cpp-python "${constraints[@]}" || llama_rc=$?
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
    trap - EXIT
    if [ "$llama_rc" != 0 ]; then
        stop "compiling llama-cpp-python failed after ${SECONDS}s (the compiler's message is above)" \
            "install a C++ compiler and cmake (Debian/Ubuntu: apt-get install build-essential cmake);" \
            "then run this again"
    fi
fi

say "installing the project and its dependencies"
pip_run install -e "$root[dev]" "${constraints[@]}" || pip_failed "installing the project's dependencies"
printf '%s\n' "$want" > "$stamp"
what="the tested lock"
[ "$use_lock" = 1 ] || what="newest versions, no lock"
say "done in $((SECONDS / 60)) min $((SECONDS % 60)) s: $venv ($what)"
