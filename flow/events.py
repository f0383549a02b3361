"""What a run reports while it happens, and what it returns when it ends.

The loop calls an :class:`AgentEvents` implementation (the CLI's screen, a JSON collector in
tests); every method has a do-nothing default so a listener implements only what it shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.messages import ToolCall, Usage
from core.tools import ToolResult

#: every way a run can end; the CLI maps them to exit codes (docts/cli.md)
RUN_STATUSES = (
    "done",             # the model answered without tool calls (and the judge, if any, passed)
    "budget_exceeded",  # steps, wall time, tokens or context spent
    "interrupted",      # the person pressed Ctrl-C
    "format_errors",    # too many malformed or repeated failing calls in a row
    "checks_failed",    # the judge's check command kept failing
    "error",            # the model server failed in a way retries could not fix
)


@dataclass
class ToolCallRecord:
    """One tool call of a run, as reported to scripts (``--output-format json``)."""

    name: str
    arguments: dict[str, Any]
    ok: bool
    summary: str
    duration_s: float


@dataclass
class RunResult:
    """How a run ended."""

    status: str
    answer: str
    session_id: str
    steps: int = 0
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    reason: str = ""  # one line for the person when status is not "done"
    elapsed_s: float = 0.0
    budget: str = ""  # with budget_exceeded: "steps" | "time" | "tokens" | "context"

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "answer": self.answer,
            "reason": self.reason,
            "session_id": self.session_id,
            "steps": self.steps,
            "elapsed_s": round(self.elapsed_s, 3),
            "tool_calls": [vars(c) for c in self.tool_calls],
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "cached_tokens": self.usage.cached_tokens,
                "total_tokens": self.usage.total_tokens,
            },
        }


class AgentEvents:
    """Listener for a run. Called from the thread that runs the loop."""

    def thinking(self, step: int) -> None:
        """A model call starts."""

    def text(self, delta: str) -> None:
        """A piece of the model's answer arrived (streaming)."""

    def assistant_done(self, text: str, calls: tuple[ToolCall, ...]) -> None:
        """The model call finished with this text and these calls."""

    def tool_start(self, call: ToolCall) -> None:
        """A tool call starts running."""

    def tool_end(self, call: ToolCall, result: ToolResult, duration_s: float) -> None:
        """A tool call finished (``result.ok`` False for errors shown to the model)."""

    def notice(self, message: str) -> None:
        """Something the person should know (context compacted, retrying, skill failed to load)."""

    def usage(self, total: Usage, context_used: int, context_size: int | None) -> None:
        """Token totals so far and how full the context is."""

    def prompt_progress(self, done: int, total: int, cached: int, time_ms: float) -> None:
        """The server has read ``done`` of the prompt's ``total`` tokens (``cached`` reused) in ``time_ms``."""
