"""The tool contract: a name, a description, a JSON schema for the arguments and a callable.

Built-in tools and promoted skills look the same to the loop. A tool signals an expected failure
by raising :class:`core.errors.ToolError` (or returning ``ToolResult(ok=False, ...)``); the loop
turns either into an error result for the model. Any other exception is a bug in the program.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call, as the model will see it (``content``) plus facts for the UI."""

    content: str
    ok: bool = True
    summary: str = ""  # one short line for the person ("wrote 12 lines to a.py")
    data: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def error(message: str, hint: str | None = None) -> "ToolResult":
        text = f"Error: {message}" + (f"\nHint: {hint}" if hint else "")
        return ToolResult(text, ok=False, summary=message.splitlines()[0][:120] if message else "error")


@dataclass(frozen=True)
class Tool:
    """A tool the model can call.

    ``fn`` receives the validated arguments as keyword arguments and returns a ``str`` or a
    :class:`ToolResult`. ``read_only`` tools may run concurrently with each other.
    ``timeout_s`` bounds one call (``None``: the loop's default).

    Stopping: when ``fn`` takes a keyword argument ``cancel`` (and the schema has no argument of
    that name), the registry passes a fresh :class:`threading.Event` per call, set when the
    person interrupts (Ctrl-C) or the call overruns ``timeout_s``. The tool then stops what it
    started (the code tools kill their sandbox) and may return a result saying what it had done.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., "str | ToolResult"]
    read_only: bool = False
    timeout_s: float | None = None
    source: str = "builtin"  # "builtin" | "skill"

    def spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)},
        }


class ToolProvider(Protocol):
    """Anything that can list tools for the next model call (the registry, the skill loader)."""

    def tools(self) -> list[Tool]: ...


def object_schema(properties: Mapping[str, Any], required: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON schema for an object with the given properties; no other keys allowed."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
    }
