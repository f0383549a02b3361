#!/usr/bin/env bash
# Serve a Qwen2.5-Coder model over an OpenAI-compatible API on 127.0.0.1:8000.
# First run: creates .venv and installs the project (boot/install.sh), then serves.
#   bash runsv.sh              the default model (downloaded once into model/weights/)
#   bash runsv.sh --demo       the bundled tiny model (no download, CPU is fine)
#   bash runsv.sh --plan       the memory plan only;  bash runsv.sh --help  for every flag
set -euo pipefail

root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
cd -- "$root"

die() { printf 'runsv.sh: %s\n' "$*" >&2; exit 2; }

# --help answers at once when the install is usable, without checking that it is current.
for arg in "$@"; do
    if [[ "$arg" == "-h" || "$arg" == "--help" ]] && [[ -x .venv/bin/python ]] \
        && .venv/bin/python -c 'import boot.serve' >/dev/null 2>&1; then
        exec .venv/bin/python -m boot.serve "$@"
    fi
done

[[ -f boot/install.sh ]] || die "boot/install.sh is missing; is this a complete checkout of the project?"

# The installer is a no-op when the install is current; it creates .venv on the first run.
# stdout stays clean for --plan --json: the installer talks on stderr
if ! bash boot/install.sh >&2; then
    die "installing into .venv failed (see above); fix the cause and run 'bash runsv.sh' again"
fi

python="$root/.venv/bin/python"
[[ -x "$python" ]] || die "no Python in .venv after installing; remove .venv and run 'bash runsv.sh' again"

exec "$python" -m boot.serve "$@"
