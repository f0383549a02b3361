#!/usr/bin/env bash
# Install the project into .venv (created on first use). A no-op when the install is current.
#
# Used by runsv.sh and smoke_test.sh, so a new machine needs no other set-up command.
# Environment:
#   PYTHON              the Python (3.10+) to build .venv with (default: python3)
#   AGENT_TORCH_SPEC    torch requirement pre-installed when .venv has no torch (default torch==2.13.0)
#   AGENT_TORCH_INDEX   a package index for torch, e.g. https://download.pytorch.org/whl/cpu on a
#                       machine without an NVIDIA GPU (PyPI's Linux torch is the multi-GB CUDA build)
#   CMAKE_ARGS          passed to the llama-cpp-python build; set to -DGGML_CUDA=on automatically
#                       when an NVIDIA GPU (nvidia-smi -L) and nvcc are found and CMAKE_ARGS is unset
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.install-stamp"
python="${PYTHON:-python3}"

say() { printf '[install] %s\n' "$*" >&2; }

if ! command -v "$python" >/dev/null 2>&1; then
    say "no '$python' found: install Python 3.10 or newer, or set PYTHON=/path/to/python3"
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    say "$("$python" --version 2>&1) is too old: Python 3.10 or newer is needed (set PYTHON=...)"
    exit 1
fi

want="$(cat "$root/pyproject.toml" "$root/boot/install.sh" | sha256sum | cut -c1-16)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$venv/bin/python" -c 'import llama_cpp, fastapi, torch, core' >/dev/null 2>&1; then
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    "$python" -m venv "$venv" || { say "could not create a virtual environment (Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip

# torch first, so the project's 'torch>=…' is already met and pip keeps what is installed.
if ! "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
    spec="${AGENT_TORCH_SPEC:-torch==2.13.0}"
    say "installing $spec"
    if [ -n "${AGENT_TORCH_INDEX:-}" ]; then
        "${pip[@]}" install --quiet "$spec" --index-url "$AGENT_TORCH_INDEX"
    else
        "${pip[@]}" install --quiet "$spec"
    fi
fi

# CUDA only when there is both a GPU to run on and a compiler for it (a CUDA toolkit alone, as on
# many CI images, would make a build that takes far longer and cannot be used).
if [ -z "${CMAKE_ARGS:-}" ] && command -v nvcc >/dev/null 2>&1 \
    && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    export CMAKE_ARGS="-DGGML_CUDA=on"
    say "NVIDIA GPU and nvcc found: building llama-cpp-python with CUDA (CMAKE_ARGS=$CMAKE_ARGS)"
fi
if ! "$venv/bin/python" -c 'import llama_cpp' >/dev/null 2>&1; then
    say "installing llama-cpp-python (compiled from source: several minutes the first time, cached after)"
fi
say "installing the project and its dependencies"
"${pip[@]}" install --quiet -e "$root[dev]"
printf '%s\n' "$want" > "$stamp"
say "done: $venv"
