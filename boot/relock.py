"""Refresh the tested locks: install the newest allowed versions afresh, run the suite, pin what passed.

    python3 boot/relock.py [--torch SPEC] [--no-peers] [--keep] [-- PYTEST ARGS]

1. ``boot/constraints.txt`` (what ``boot/install.sh`` installs by default): a fresh clone of the
   committed HEAD beside a link to ``../shared``, ``AGENT_NO_LOCK=1 bash smoke_test.sh`` in it (the
   installer with the newest versions ``pyproject.toml`` allows, the health checks, the whole suite),
   and only when that passes, the clone's ``.venv`` frozen into the lock.
2. ``boot/constraints-peers.txt`` (the peers' venvs that benchmarks build, such as mini-swe-agent's):
   the newest peers in a venv of their own, each one's command started once, then frozen.

torch stays at the lock's pin unless ``--torch`` names another (PyPI's newest Linux torch is the
multi-GB CUDA build). Prints which packages moved; with a failing suite it prints what would have
moved, leaves the lock as it was and exits 1. Standard library only: runs with any python3 >= 3.10.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "boot" / "constraints.txt"
PEERS_LOCK = ROOT / "boot" / "constraints-peers.txt"
PROJECT = "local-coder"
#: the peers' packages and, for each, a command that must start in their venv
PEERS = {"mini-swe-agent": ["mini", "--help"]}
DEFAULT_TORCH = "torch==2.13.0"


def canonical(name: str) -> str:
    """The PEP 503 form of a distribution name (``Llama_CPP.python`` and ``llama-cpp-python`` are one)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: a pin without the local label is met by the CPU and the CUDA build alike."""
    return version.split("+", 1)[0]


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """``{canonical name: (name as written, version)}`` of a constraints file's ``name==version`` lines."""
    pins: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return pins
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path}: not a name==version line: {line!r}")
        pins[canonical(name.strip())] = (name.strip(), version.strip())
    return pins


def pins_from_pip_list(entries: list[dict[str, str]]) -> dict[str, tuple[str, str]]:
    """The lock's pins from ``pip list --format=json``: everything but the project, no local version labels.

    pip and setuptools too: torch needs setuptools at run time, and pip's own upgrade is locked.
    """
    return {canonical(e["name"]): (e["name"], public_version(e["version"]))
            for e in entries if canonical(e["name"]) != PROJECT}


def render_lock(pins: dict[str, tuple[str, str]], header: list[str]) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    lines += [f"{name}=={version}" for _, (name, version) in sorted(pins.items())]
    return "\n".join(lines) + "\n"


def moved(old: dict[str, tuple[str, str]], new: dict[str, tuple[str, str]]) -> list[str]:
    """One line per package that changed between two locks: ``name old -> new``, ``+ name v``, ``- name v``."""
    out = []
    for key in sorted(old.keys() | new.keys()):
        if key not in old:
            out.append(f"+ {new[key][0]} {new[key][1]}")
        elif key not in new:
            out.append(f"- {old[key][0]} {old[key][1]}")
        elif old[key][1] != new[key][1]:
            out.append(f"  {new[key][0]} {old[key][1]} -> {new[key][1]}")
    return out


def say(text: str) -> None:
    print(f"[relock] {text}", flush=True)


def pip_list(python: Path) -> list[dict[str, str]]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--exclude-editable"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def report(what: str, old: dict[str, tuple[str, str]], new: dict[str, tuple[str, str]]) -> None:
    changes = moved(old, new)
    if not changes:
        say(f"{what}: no package moved ({len(new)} pinned)")
        return
    say(f"{what}: {len(changes)} package(s) moved:")
    for line in changes:
        print(f"    {line}", flush=True)


def relock_project(work: Path, torch_spec: str, pytest_args: list[str]) -> bool:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          check=True, capture_output=True, text=True).stdout.strip()
    clone = work / "src"
    say(f"cloning HEAD ({head}) into {clone}")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (work / "shared").symlink_to(shared)  # the tests' fixtures, as beside the checkout
    env = {**os.environ, "AGENT_NO_LOCK": "1", "AGENT_TORCH_SPEC": torch_spec}
    say(f"AGENT_NO_LOCK=1 bash smoke_test.sh in the clone: newest allowed versions, {torch_spec}, then the suite")
    started = time.monotonic()
    result = subprocess.run(["bash", "smoke_test.sh", "-p", "no:cacheprovider", *pytest_args], cwd=clone, env=env)
    say(f"smoke_test.sh exited {result.returncode} after {time.monotonic() - started:.0f} s")
    python = clone / ".venv" / "bin" / "python"
    if not python.exists():
        say("the install failed before the venv had a Python: the lock is unchanged")
        return False
    new = pins_from_pip_list(pip_list(python))
    old = read_lock(LOCK)
    if result.returncode != 0:
        report("boot/constraints.txt would have moved (NOT written: the suite failed)", old, new)
        return False
    version = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                             check=True, capture_output=True, text=True).stdout.strip()
    header = [
        "The tested lock: exact versions of everything the whole suite (bash smoke_test.sh) passed with,",
        f"on Python {version}, Linux x86_64, at commit {head}. Written by python3 boot/relock.py; do not edit by hand.",
        "boot/install.sh installs with pip install -c (this file minus torch, which it installs first);",
        "AGENT_NO_LOCK=1 bash boot/install.sh ignores it. torch's pin has no +cpu/+cuXXX label: either build meets it.",
        "",
    ]
    LOCK.write_text(render_lock(new, header))
    report("boot/constraints.txt", old, new)
    return True


def relock_peers(work: Path) -> bool:
    venv = work / "peers"
    say(f"peers {', '.join(PEERS)}: a venv of their own at {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    if subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEERS]).returncode != 0:
        say("installing the peers failed: boot/constraints-peers.txt is unchanged")
        return False
    for name, command in PEERS.items():
        run = subprocess.run([str(venv / "bin" / command[0]), *command[1:]], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=300)
        if run.returncode != 0:
            say(f"{name}: `{' '.join(command)}` exited {run.returncode}: boot/constraints-peers.txt is unchanged")
            print(run.stdout[-2000:], run.stderr[-2000:], sep="\n")
            return False
    new = pins_from_pip_list(pip_list(python))
    old = read_lock(PEERS_LOCK)
    version = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                             check=True, capture_output=True, text=True).stdout.strip()
    header = [
        f"The peers' lock: {', '.join(PEERS)} and everything pip installs with it, installed and started once",
        f"({', '.join(' '.join(c) for c in PEERS.values())}) on Python {version}.",
        "For the venvs of their own that benchmarks build: pip install -c boot/constraints-peers.txt mini-swe-agent.",
        "Written by python3 boot/relock.py; do not edit by hand.",
        "",
    ]
    PEERS_LOCK.write_text(render_lock(new, header))
    report("boot/constraints-peers.txt", old, new)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 boot/relock.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", help="the torch requirement to test with (default: the lock's pin)")
    parser.add_argument("--no-peers", action="store_true", help="leave boot/constraints-peers.txt alone")
    parser.add_argument("--no-project", action="store_true", help="leave boot/constraints.txt alone")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (kept anyway on a failure)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)
    locked = read_lock(LOCK).get("torch")
    torch_spec = args.torch or (f"torch=={locked[1]}" if locked else DEFAULT_TORCH)
    work = Path(tempfile.mkdtemp(prefix="relock-"))
    started = time.monotonic()
    ok = True
    try:
        if not args.no_project:
            ok = relock_project(work, torch_spec, args.pytest_args) and ok
        if not args.no_peers:
            ok = relock_peers(work) and ok
    finally:
        minutes = (time.monotonic() - started) / 60
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            say(f"{'passed' if ok else 'FAILED'} in {minutes:.1f} min")
        else:
            say(f"{'passed' if ok else 'FAILED'} in {minutes:.1f} min; the scratch folder is kept: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
