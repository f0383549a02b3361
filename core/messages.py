"""Messages, tool calls and completions: the data every folder speaks.

These are frozen dataclasses, not dicts. Conversion to a wire format (OpenAI JSON, Gemini JSON,
SQLite rows) happens at the edge that needs it. Tool-call arguments are a parsed ``dict`` here
and a JSON string only on the OpenAI wire.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


def new_call_id() -> str:
    """An id for a tool call, in the shape OpenAI clients expect (``call_`` + 24 hex)."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool by the model.

    ``error`` is set when the model named a tool but its arguments could not be decoded into an
    object; the loop then reports the error to the model instead of running the tool.
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_call_id)
    error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.arguments, Mapping):
            raise TypeError(f"ToolCall.arguments must be a mapping, got {type(self.arguments).__name__}")


@dataclass(frozen=True)
class Message:
    """One message of a conversation."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if not isinstance(self.tool_calls, tuple):
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))

    @staticmethod
    def system(content: str) -> "Message":
        return Message("system", content)

    @staticmethod
    def user(content: str) -> "Message":
        return Message("user", content)

    @staticmethod
    def assistant(content: str = "", tool_calls: tuple[ToolCall, ...] | list[ToolCall] = ()) -> "Message":
        return Message("assistant", content, tuple(tool_calls))

    @staticmethod
    def tool(call_id: str, name: str, content: str) -> "Message":
        return Message("tool", content, tool_call_id=call_id, name=name)


@dataclass(frozen=True)
class Usage:
    """Token counts of one model call (``cached_tokens``: prompt tokens served from a KV cache)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class Completion:
    """What a gateway returns for one model call: an assistant message, why it stopped, usage."""

    message: Message
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self.message.tool_calls

    @property
    def text(self) -> str:
        return self.message.content
