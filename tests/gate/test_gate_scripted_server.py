"""The stand-in OpenAI server as other tests use it: in-process, and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.messages import Message
from core.tools import Tool, object_schema
from gate.openai_compat import OpenAICompatGateway
from gate.scripted_server import ScriptedServer, call_text, load_script

ROOT = Path(__file__).resolve().parents[2]


def test_replies_are_played_in_order_and_requests_recorded():
    with ScriptedServer([{"text": "one"}, {"text": "two"}]) as server:
        gateway = OpenAICompatGateway(server.base_url, "m")
        assert [gateway.complete([Message.user(q)]).text for q in ("a", "b")] == ["one", "two"]
        over_http = httpx.get(f"{server.root_url}/_scripted/requests").json()
    assert [r["messages"][-1]["content"] for r in server.requests] == ["a", "b"]
    assert over_http == {"requests": server.requests, "unexpected": 0}


def test_a_callable_reply_sees_the_request():
    with ScriptedServer([lambda body: {"text": f"you said {body['messages'][-1]['content']}"}]) as server:
        assert OpenAICompatGateway(server.base_url, "m").complete([Message.user("hi")]).text == "you said hi"


def test_call_text_writes_each_format():
    call = [{"name": "f", "arguments": {"a": 1}}]
    assert call_text(call, "tool_call") == '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    assert call_text(call, "bare") == '{"name": "f", "arguments": {"a": 1}}'
    assert call_text(call, "tag") == '<tool name="f">{"a": 1}</tool>'
    assert call_text(call, "fence").startswith("```json\n{") and call_text(call, "fence").endswith("}\n```")
    with pytest.raises(ValueError, match="unknown tool-call format 'xml'"):
        call_text(call, "xml")


def test_a_script_file_with_an_unknown_key_is_refused_with_the_allowed_ones(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"replies": [], "reply": []}))
    with pytest.raises(SystemExit, match=r"unknown keys \['reply'\]"):
        load_script(script)


def test_the_module_runs_as_a_subprocess_and_prints_its_url(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"model": "from-file", "tokenize": True, "replies": [
        {"tool_calls": [{"name": "write_file", "arguments": {"path": "x"}}], "format": "tool_call"}]}))
    proc = subprocess.Popen([sys.executable, "-m", "gate.scripted_server", "--script", str(script)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), proc.stderr.read() if not url else url
        gateway = OpenAICompatGateway(url)
        tool = Tool("write_file", "w", object_schema({"path": {"type": "string"}}, ["path"]), lambda **k: "")
        completion = gateway.complete([Message.user("go")], [tool], on_event=lambda e: None)
        assert gateway.model == "from-file"
        assert [(c.name, dict(c.arguments)) for c in completion.tool_calls] == [("write_file", {"path": "x"})]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
