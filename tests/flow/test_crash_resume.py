"""A run killed with SIGKILL in the middle of a tool call, then resumed in a fresh process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.messages import Message
from store.sessions import INTERRUPTED_RESULT, SessionStore

from flow_helpers import well_formed

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys, threading
from pathlib import Path
from boot.settings import Settings
from boot.wiring import build_agent
from core.messages import ToolCall
from core.tools import Tool, object_schema
from gate.scripted import ScriptedGateway

workspace, marker = Path(sys.argv[1]), Path(sys.argv[2])

def hang(path: str) -> str:
    marker.write_text("running")  # the parent kills us once it sees this
    threading.Event().wait(600)
    return "never"

settings = Settings(workspace=workspace, enable_files=False, ctx=None)
gateway = ScriptedGateway([["Reading it first.", ToolCall("hang", {"path": "notes.md"})]], context=8192)
tool = Tool("hang", "Hang.", object_schema({"path": {"type": "string"}}, ["path"]), hang, timeout_s=600)
agent = build_agent(settings, gateway=gateway, tools=[tool])
agent.run("summarise notes.md")
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_session_killed_mid_tool_is_repaired_and_resumed(tmp_path, make_agent, workspace):
    marker = tmp_path / "running"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(script), str(workspace), str(marker)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.monotonic() < deadline, "the child never reached the tool call"
            time.sleep(0.02)  # polling a file another process writes, with a deadline
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    db = workspace / ".agent" / "sessions.db"
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with SessionStore(db) as store:
        sid = store.latest()
        assert store.info(sid).status == "running"  # it never got to write an ending
        before = store.messages(sid)
        assert [m.role for m in before] == ["user", "assistant"]
        assert before[1].content == "Reading it first." and before[1].tool_calls[0].name == "hang"

    # a fresh process's view: the next run on the session repairs it and the model sees a valid history
    def check(messages, offered):
        well_formed(messages)
        assert messages[2:] == [
            Message.user("summarise notes.md"),
            before[1],
            Message.tool(before[1].tool_calls[0].id, "hang", INTERRUPTED_RESULT),
            Message.user("try again, without hang"),
        ]
        return "notes.md is about the release plan."

    agent, _, _ = make_agent([check])
    result = agent.run("try again, without hang", session_id=sid)
    assert (result.status, result.session_id) == ("done", sid)
    assert agent.sessions.info(sid).status == "done"
