"""Entry point: ``python cli.py`` chats with the coding agent; ``python cli.py -p TASK`` runs one task.

Runs with any Python 3: only the standard library is used until it is inside the project's
``.venv``, which it re-executes itself into. Everything else lives in ``boot/cli.py``.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
_REEXEC = "LOCAL_CODER_REEXEC"


def _in_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def _venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def main() -> None:
    if not _in_venv() and not os.environ.get(_REEXEC):
        python = _venv_python()
        if not python.exists():
            print(f"error: the project's environment {VENV} does not exist yet; "
                  f"run `bash runsv.sh` (or `bash smoke_test.sh`) first to install it", file=sys.stderr)
            sys.exit(2)
        # same arguments, same file: only the interpreter changes; the mark stops a loop when
        # the venv's interpreter reports another prefix (a venv moved after it was made)
        os.environ[_REEXEC] = "1"
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.path.insert(0, str(REPO))
    from boot.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
