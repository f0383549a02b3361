"""runsv.sh's own behaviour, in a copy of it beside a stand-in installer and interpreter.

The real installer (boot/install.sh) may need the network; these tests only check what runsv.sh
itself promises: it runs the installer, stops with one clear line when that fails, and hands every
argument, quoting intact, to ``.venv/bin/python -m boot.serve``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _fake_checkout(tmp_path: Path, installer_exit: int) -> Path:
    root = tmp_path / "checkout"
    (root / "boot").mkdir(parents=True)
    (root / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "runsv.sh", root / "runsv.sh")
    (root / "boot" / "install.sh").write_text(
        f"echo installer-ran >> \"$(dirname \"$0\")/../install.log\"\necho 'pip noise'\nexit {installer_exit}\n")
    python = root / ".venv" / "bin" / "python"
    python.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/../../args.txt\"\necho served\n")
    python.chmod(0o755)
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(root / "runsv.sh"), *args], cwd="/", capture_output=True, text=True,
                          timeout=30)


def test_runsv_installs_then_execs_the_server_with_every_argument(tmp_path):
    root = _fake_checkout(tmp_path, 0)
    result = _run(root, "--model", "my model.gguf", "--port", "8123", "")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "served\n"  # the installer's chatter went to stderr
    assert "pip noise" in result.stderr
    assert (root / "install.log").read_text() == "installer-ran\n"
    assert (root / "args.txt").read_text().split("\n")[:-1] == ["-m", "boot.serve", "--model", "my model.gguf",
                                                                "--port", "8123", ""]


def test_runsv_stops_with_one_clear_line_when_the_install_fails(tmp_path):
    root = _fake_checkout(tmp_path, 1)
    result = _run(root, "--demo")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("runsv.sh: installing into .venv failed")
    assert not (root / "args.txt").exists()


def test_runsv_without_the_installer_says_the_checkout_is_incomplete(tmp_path):
    root = _fake_checkout(tmp_path, 0)
    (root / "boot" / "install.sh").unlink()
    result = _run(root)
    assert result.returncode == 2 and "boot/install.sh is missing" in result.stderr


def test_runsv_is_strict_bash():
    text = (ROOT / "runsv.sh").read_text()
    assert "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(ROOT / "runsv.sh")]).returncode == 0
