"""Importing gate stays light: no torch, no llama_cpp, and no web server stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_gate_loads_no_model_runtime_and_no_server():
    code = ("import sys, gate; heavy = [m for m in ('torch', 'llama_cpp', 'transformers', 'uvicorn', 'starlette', "
            "'fastapi') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
