"""Helpers for the task checks.

A check runs with cwd = the agent's final workspace, ``AGENT_ANSWER`` = the agent's final text and
``TASK_DIR`` = the task's folder (for pristine copies of starting files). Exit 0 means solved; a
failing check prints one line saying why. Checks are strict about behaviour, lenient about style.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

WS = Path.cwd()
TASK_DIR = Path(os.environ.get("TASK_DIR", "."))
sys.path.insert(0, str(WS))
sys.dont_write_bytecode = True


def fail(msg: str) -> NoReturn:
    print("FAIL: " + " | ".join(line for line in msg.splitlines() if line.strip()))
    sys.exit(1)


def expect(cond: Any, msg: str) -> None:
    if not cond:
        fail(msg)


def answer() -> str:
    return os.environ.get("AGENT_ANSWER", "")


def read(path: str) -> str:
    p = WS / path
    if not p.is_file():
        fail(f"{path} does not exist")
    return p.read_text(encoding="utf-8", errors="replace")


def original(path: str) -> str:
    """The starting version of a workspace file."""
    return (TASK_DIR / "ws" / path).read_text(encoding="utf-8")


def load(name: str) -> Any:
    """Import a workspace module; a failing import fails the check."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # any error in the agent's code is a failed task, not a crash of the check
        fail(f"import {name}: {type(exc).__name__}: {exc}")


def run(args: list[str], *, input: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (``python`` means this interpreter) and return it; a timeout fails the check."""
    if args and args[0] == "python":
        args = [sys.executable, *args[1:]]
    full_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    try:
        return subprocess.run(args, input=input, capture_output=True, text=True, env=full_env,
                              timeout=timeout, cwd=cwd or WS)
    except subprocess.TimeoutExpired:
        fail(f"{' '.join(args)} ran past {timeout} s")


def pytest(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run(["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd, timeout=120)


def read_csv(path: str) -> list[dict[str, str]]:
    text = read(path)
    rows = list(csv.DictReader(text.splitlines()))
    # lenient about stray spaces around names and values
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]


def read_json(path: str) -> Any:
    try:
        return json.loads(read(path))
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc}")


def number_in(text: str) -> float:
    m = re.search(r"-?\d+(?:\.\d+)?", text)
    if not m:
        fail(f"no number in {text[:80]!r}")
    return float(m.group())


def raises(exc: type[BaseException], fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
    except exc:
        return True
    except Exception:
        return False
    return False
