"""boot/install.sh: the tested lock by default, a stamp that covers it, a line per step, errors that say what to do.

The real script runs in a copy of the project whose ``.venv/bin/python`` is a stand-in: it records
each call and answers imports as the test says, so no package is downloaded. A real install is what
CI's fresh clone and ``python3 boot/relock.py`` run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: a stand-in for .venv/bin/python: logs its arguments; ``-c 'import a, b'`` succeeds when every
#: module is in $FAKE_HAVE; ``-m pip`` succeeds (printing like pip unless --quiet) unless its arguments
#: contain $PIP_FAIL, and keeps a copy of the constraints file it was given
FAKE_PYTHON = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> "$FAKE_LOG"
if [ "$1" = -c ]; then
    mods="${2#import }"
    for m in ${mods//,/ }; do
        case " $FAKE_HAVE " in *" $m "*) ;; *) exit 1 ;; esac
    done
    exit 0
fi
if [ "$1" = -m ] && [ "$2" = pip ]; then
    if [ -n "${PIP_FAIL:-}" ] && [[ "$*" == *"$PIP_FAIL"* ]]; then
        echo "ERROR: no matching distribution" >&2; exit 1
    fi
    for arg in "$@"; do
        if [ "$prev" = -c ]; then cp "$arg" "$FAKE_LOG.constraints"; fi
        prev="$arg"
    done
    [[ " $* " == *" --quiet "* ]] && exit 0
    echo "Requirement already satisfied: something"
    echo "Collecting a-package"
    exit 0
fi
[ "$1" = --version ] && echo "Python 3.11.2"
exit 0
"""

LOCK = "# a lock\ntorch==2.13.0\nfastapi==0.200.1\npip==99.0\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "boot").mkdir(parents=True)
    shutil.copy(REPO / "boot" / "install.sh", root / "boot" / "install.sh")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "boot" / "constraints.txt").write_text(LOCK)
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return root


def install(root: Path, have: str = "", **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the real installer in ``root``; (the finished run, the stand-in Python's calls)."""
    log = root / "calls.log"
    log.unlink(missing_ok=True)
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_") and k not in ("CMAKE_ARGS", "PIP_FAIL")}
    full.update({"FAKE_LOG": str(log), "FAKE_HAVE": have, "PATH": os.environ["PATH"]}, **env)
    done = subprocess.run(["bash", str(root / "boot" / "install.sh")], capture_output=True, text=True, env=full,
                          stdin=subprocess.DEVNULL, timeout=60)
    return done, (log.read_text().splitlines() if log.exists() else [])


def pip_installs(calls: list[str]) -> list[str]:
    return [c.removeprefix("-m pip install ") for c in calls if c.startswith("-m pip install")]


def test_a_fresh_install_uses_the_lock_for_every_step_but_torchs_own_pin(project: Path) -> None:
    started = time.monotonic()
    done, calls = install(project)
    assert done.returncode == 0, done.stderr
    # the 30-second ticker beside the llama.cpp step leaves no sleep behind to hold the caller's pipe
    assert time.monotonic() - started < 25
    steps = pip_installs(calls)
    constraints = f"-c {project / '.venv' / '.constraints.txt'}"
    assert steps == [f"--quiet --upgrade pip {constraints}", f"torch==2.13.0 {constraints}",
                     f"llama-cpp-python {constraints}", f"-e {project}[dev] {constraints}"]
    # torch is installed on its own and never swapped for the lock's: the constraints pip gets lack it
    assert (project / "calls.log.constraints").read_text() == "# a lock\nfastapi==0.200.1\npip==99.0\n"
    assert (project / ".venv" / ".install-stamp").is_file()


def test_every_line_says_the_time_so_far_and_the_last_one_the_total(project: Path) -> None:
    done, _ = install(project)
    lines = done.stderr.splitlines()
    ours = [line for line in lines if line.startswith("[install")]
    assert all(re.match(r"\[install \d+:\d\d\] ", line) for line in ours)
    assert any("compiling llama.cpp (llama-cpp-python) — usually 4–8 minutes on 2 cores;" in line for line in ours)
    assert re.match(r"\[install \d+:\d\d\] done in \d+ min \d+ s: .*\.venv \(the tested lock\)$", lines[-1])
    # pip talks (no --quiet on the big steps) but a log keeps only what says something
    assert "Collecting a-package" in done.stderr and "Requirement already satisfied" not in done.stderr
    assert done.stdout == ""  # runsv.sh --plan --json owns stdout


def test_without_the_lock_no_constraints_reach_pip(project: Path) -> None:
    done, calls = install(project, AGENT_NO_LOCK="1")
    assert done.returncode == 0, done.stderr
    assert pip_installs(calls) == ["--quiet --upgrade pip", "torch==2.13.0", "llama-cpp-python", f"-e {project}[dev]"]
    assert "AGENT_NO_LOCK=1" in done.stderr and done.stderr.rstrip().endswith("(newest versions, no lock)")


def test_an_installed_torch_and_llama_cpp_are_kept(project: Path) -> None:
    done, calls = install(project, have="torch llama_cpp", AGENT_TORCH_SPEC="torch==9.9")
    assert done.returncode == 0, done.stderr
    assert [s.split()[0] for s in pip_installs(calls)] == ["--quiet", "-e"]
    assert "compiling" not in done.stderr


def test_torch_spec_from_the_environment_wins_over_the_lock(project: Path) -> None:
    done, calls = install(project, AGENT_TORCH_SPEC="torch==2.14.1")
    assert done.returncode == 0, done.stderr
    assert pip_installs(calls)[1].startswith("torch==2.14.1 -c ")


def test_a_current_install_is_a_silent_no_op_until_the_lock_changes(project: Path) -> None:
    everything = "torch llama_cpp fastapi core"
    first, _ = install(project)
    assert first.returncode == 0, first.stderr
    again, calls = install(project, have=everything)
    assert (again.returncode, again.stderr, pip_installs(calls)) == (0, "", [])

    (project / "boot" / "constraints.txt").write_text(LOCK.replace("fastapi==0.200.1", "fastapi==0.200.2"))
    relocked, calls = install(project, have=everything)
    assert relocked.returncode == 0 and pip_installs(calls)[-1].startswith(f"-e {project}[dev] -c ")
    # switching the lock off is a change too
    unlocked, calls = install(project, have=everything, AGENT_NO_LOCK="1")
    assert unlocked.returncode == 0 and pip_installs(calls)[-1] == f"-e {project}[dev]"


@pytest.mark.parametrize(("failing", "what"), [
    ("llama-cpp-python", "apt-get install build-essential cmake); then run this again"),
    ("[dev]", "AGENT_NO_LOCK=1 bash boot/install.sh"),
])
def test_a_failed_step_ends_with_what_to_do_and_leaves_no_stamp(project: Path, failing: str, what: str) -> None:
    done, _ = install(project, PIP_FAIL=failing)
    assert done.returncode == 1
    last = done.stderr.rstrip().splitlines()[-1]
    assert re.match(r"\[install \d+:\d\d\] what to do: ", last) and what in last
    assert "ERROR: no matching distribution" in done.stderr
    assert not (project / ".venv" / ".install-stamp").exists()
