"""Message and completion dataclasses: the invariants other folders rely on."""

from __future__ import annotations

import dataclasses

import pytest

from core.errors import BudgetExceeded, ConfigError, FatalError, GatewayError, ModelFacingError, RunEnded, ToolError
from core.messages import Message, ToolCall, Usage, new_call_id
from core.tools import Tool, ToolResult, object_schema


def test_messages_are_frozen():
    m = Message.user("hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.content = "changed"  # type: ignore[misc]


def test_tool_calls_become_a_tuple():
    m = Message("assistant", "", [ToolCall("read_file", {"path": "a"})])  # type: ignore[arg-type]
    assert isinstance(m.tool_calls, tuple)


@pytest.mark.parametrize("kwargs,needle", [
    ({"role": "robot"}, "unknown role"),
    ({"role": "user", "tool_calls": (ToolCall("x"),)}, "only assistant"),
    ({"role": "tool", "content": "r"}, "tool_call_id"),
])
def test_bad_messages_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Message(**kwargs)


def test_tool_call_arguments_must_be_a_mapping():
    with pytest.raises(TypeError):
        ToolCall("x", "[]")  # type: ignore[arg-type]


def test_call_ids_are_unique_and_openai_shaped():
    ids = {new_call_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("call_") and len(i) == 29 for i in ids)


def test_usage_adds_up():
    total = Usage(10, 2, 4) + Usage(5, 1, 0)
    assert (total.prompt_tokens, total.completion_tokens, total.cached_tokens, total.total_tokens) == (15, 3, 4, 18)


def test_tool_spec_is_openai_shaped():
    t = Tool("echo", "Echo text.", object_schema({"text": {"type": "string"}}, ["text"]), lambda text: text)
    assert t.spec() == {"type": "function", "function": {"name": "echo", "description": "Echo text.", "parameters": {
        "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"], "additionalProperties": False}}}


def test_tool_result_error_carries_the_hint():
    r = ToolResult.error("no such file 'a'", "list_files shows what exists")
    assert not r.ok and r.content == "Error: no such file 'a'\nHint: list_files shows what exists"


def test_errors_are_sorted_by_who_must_act():
    assert issubclass(ToolError, ModelFacingError)
    assert issubclass(BudgetExceeded, RunEnded) and BudgetExceeded("x", budget="steps").status == "budget_exceeded"
    assert issubclass(ConfigError, FatalError)
    assert GatewayError("x", status_code=503, retryable=True).retryable
    assert str(ToolError("bad", hint="do this")) == "bad (do this)"
