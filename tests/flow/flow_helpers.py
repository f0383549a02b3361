"""Helpers for the loop tests: an event recorder, a strict-server check, small real tools."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from core.errors import ToolError
from core.messages import Message, ToolCall
from core.tools import Tool, ToolResult, object_schema
from flow.events import AgentEvents


class Recorder(AgentEvents):
    """Keeps every event, in order, as (kind, payload)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.on_text: Callable[[str], None] | None = None
        self.on_tool_start: Callable[[ToolCall], None] | None = None

    def kinds(self) -> list[str]:
        return [k for k, _ in self.seen]

    def of(self, kind: str) -> list[Any]:
        return [p for k, p in self.seen if k == kind]

    def thinking(self, step: int) -> None:
        self.seen.append(("thinking", step))

    def text(self, delta: str) -> None:
        self.seen.append(("text", delta))
        if self.on_text is not None:
            self.on_text(delta)

    def assistant_done(self, text: str, calls: tuple[ToolCall, ...]) -> None:
        self.seen.append(("assistant_done", (text, calls)))

    def tool_start(self, call: ToolCall) -> None:
        self.seen.append(("tool_start", call))
        if self.on_tool_start is not None:
            self.on_tool_start(call)

    def tool_end(self, call: ToolCall, result: ToolResult, duration_s: float) -> None:
        self.seen.append(("tool_end", (call, result)))

    def notice(self, message: str) -> None:
        self.seen.append(("notice", message))

    def usage(self, total: Any, context_used: int, context_size: int | None) -> None:
        self.seen.append(("usage", (total, context_used, context_size)))


def well_formed(messages: list[Message]) -> None:
    """Assert what a strict OpenAI-compatible server checks: each call answered right after it."""
    i = 0
    while i < len(messages):
        msg = messages[i]
        assert msg.role != "tool", f"tool result at {i} does not follow its call: {msg}"
        if msg.role == "assistant" and msg.tool_calls:
            ids = [c.id for c in msg.tool_calls]
            results = []
            j = i + 1
            while j < len(messages) and messages[j].role == "tool":
                results.append(messages[j].tool_call_id)
                j += 1
            assert sorted(results) == sorted(ids), f"calls {ids} answered by {results}"
            i = j
        else:
            i += 1


class Tools:
    """Small real tools; ``release`` lets any blocked tool finish at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.release = threading.Event()
        self.started = threading.Event()
        self.ran: list[tuple[str, dict[str, Any]]] = []

    def all(self) -> list[Tool]:
        return [self.echo(), self.write_note(), self.fail(), self.big(), self.block()]

    def echo(self) -> Tool:
        def echo(text: str, times: int = 1) -> str:
            self.ran.append(("echo", {"text": text, "times": times}))
            return text * times
        return Tool("echo", "Return the text, repeated.", object_schema(
            {"text": {"type": "string"}, "times": {"type": "integer", "minimum": 1}}, ["text"]), echo, read_only=True)

    def write_note(self) -> Tool:
        def write_note(path: str, text: str) -> ToolResult:
            self.ran.append(("write_note", {"path": path, "text": text}))
            (self.root / path).write_text(text, encoding="utf-8")
            return ToolResult(f"wrote {len(text)} characters to {path}", summary=f"wrote {path}")
        return Tool("write_note", "Write a text file.", object_schema(
            {"path": {"type": "string"}, "text": {"type": "string"}}, ["path", "text"]), write_note)

    def fail(self) -> Tool:
        def fail(path: str) -> str:
            self.ran.append(("fail", {"path": path}))
            raise ToolError(f"{path!r} does not exist", hint="list the files first")
        return Tool("fail", "Always fails.", object_schema({"path": {"type": "string"}}, ["path"]), fail,
                    read_only=True)

    def big(self) -> Tool:
        def big(lines: int) -> str:
            self.ran.append(("big", {"lines": lines}))
            return "".join(f"line {i:05d} " + "x" * 40 + "\n" for i in range(1, lines + 1))
        return Tool("big", "Return many lines.", object_schema({"lines": {"type": "integer"}}, ["lines"]), big,
                    read_only=True)

    def block(self) -> Tool:
        def block() -> str:
            self.ran.append(("block", {}))
            self.started.set()
            self.release.wait(30)
            return "released"
        return Tool("block", "Wait until released.", object_schema({}), block, timeout_s=30)
