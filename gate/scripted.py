"""The strict scripted gateway: the model fake every test uses instead of mocks.

Each call of :meth:`ScriptedGateway.complete` takes the next step of the script:

- a :class:`Completion` — returned as it is;
- a ``str`` — an answer with that text and no tool calls;
- a :class:`ToolCall`, or a list/tuple of them (a ``str`` among them is the answer's text) —
  an answer with those calls (``finish_reason`` ``"tool_calls"``);
- an exception (instance or class) — raised, e.g. ``ContextOverflow("…")``;
- a callable ``(messages, tools) -> step`` — called with the request (assert on it there) and
  its return value is used as above.

A call beyond the script fails with an ``AssertionError`` saying what came in; steps left over
are reported by :meth:`ScriptedGateway.assert_done` (called on leaving a ``with`` block).
Text is streamed to ``on_event`` in small pieces and a set ``cancel`` raises
:class:`core.errors.Interrupted` between pieces, as the real gateways do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from core.errors import Interrupted
from core.gateway import StreamCallback, StreamEvent
from core.messages import Completion, Message, ToolCall, Usage
from core.tools import Tool
from gate.transport import TokenCounter, estimate_tokens

#: Completion | str | ToolCall | Sequence[ToolCall | str] | BaseException | exception class | StepFn
Step = Any
StepFn = Callable[[list[Message], list[Tool]], Step]


@dataclass(frozen=True)
class ScriptedRequest:
    """One call the gateway received."""

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...]
    max_tokens: int | None
    temperature: float | None
    tool_choice: str | None = None

    @property
    def tool_names(self) -> list[str]:
        return [t.name for t in self.tools]

    @property
    def last(self) -> Message:
        return self.messages[-1]


def _describe(step: Step) -> str:
    if isinstance(step, Completion):
        calls = ", ".join(c.name for c in step.tool_calls)
        return f"Completion(text={step.text[:40]!r}" + (f", calls=[{calls}])" if calls else ")")
    if isinstance(step, ToolCall):
        return f"ToolCall({step.name!r})"
    if isinstance(step, BaseException) or (isinstance(step, type) and issubclass(step, BaseException)):
        return f"raise {step!r}"
    if callable(step):
        return f"callable {getattr(step, '__name__', repr(step))}"
    return repr(step)[:80]


def _as_completion(step: Step, model: str, index: int) -> Completion:
    if isinstance(step, Completion):
        return step
    if isinstance(step, str):
        return Completion(Message.assistant(step), "stop", model=model)
    if isinstance(step, ToolCall):
        step = [step]
    if isinstance(step, (list, tuple)) and all(isinstance(s, (ToolCall, str)) for s in step):
        text = "".join(s for s in step if isinstance(s, str))
        calls = tuple(s for s in step if isinstance(s, ToolCall))
        return Completion(Message.assistant(text, calls), "tool_calls" if calls else "stop", model=model)
    raise TypeError(f"script step {index} is not a Completion, str, ToolCall(s), exception or callable: {step!r}")


class ScriptedGateway:
    """A :class:`core.gateway.ModelGateway` that plays a fixed script and records every request."""

    def __init__(self, steps: Sequence[Step], *, model: str = "scripted", context: int | None = 4096,
                 piece_chars: int = 4, constrains: bool = False) -> None:
        self.model = model
        self._constrains = constrains  # plays a server that grammar-constrains tool_choice="required"
        self.steps = list(steps)
        self.requests: list[ScriptedRequest] = []
        self._context = context
        self._piece_chars = max(1, piece_chars)
        self._counter = TokenCounter(estimate_tokens)
        self._lock = threading.Lock()

    def constrains_calls(self) -> bool:
        return self._constrains

    @property
    def calls(self) -> int:
        return len(self.requests)

    @property
    def remaining(self) -> list[Step]:
        return self.steps[len(self.requests):]

    def complete(self, messages: Sequence[Message], tools: Sequence[Tool] = (), *,
                 max_tokens: int | None = None, temperature: float | None = None,
                 on_event: StreamCallback | None = None, cancel: threading.Event | None = None,
                 tool_choice: str | None = None) -> Completion:
        with self._lock:
            index = len(self.requests)
            self.requests.append(ScriptedRequest(tuple(messages), tuple(tools), max_tokens, temperature, tool_choice))
        if index >= len(self.steps):
            last = messages[-1] if messages else None
            shown = f"{last.role}: {last.content[:120]!r}" if last else "no messages"
            raise AssertionError(f"ScriptedGateway: unexpected call #{index + 1}; the script has "
                                 f"{len(self.steps)} step(s). Last message of the request: {shown}")
        if cancel is not None and cancel.is_set():
            raise Interrupted("interrupted before the model was called")
        step = self.steps[index]
        if callable(step) and not isinstance(step, type):
            step = step(list(messages), list(tools))
        if isinstance(step, BaseException) or (isinstance(step, type) and issubclass(step, BaseException)):
            raise step
        completion = _as_completion(step, self.model, index)
        if completion.usage == Usage():
            completion = Completion(completion.message, completion.finish_reason,
                                    Usage(self.count_tokens(messages, tools), self._counter.text(completion.text)),
                                    completion.model or self.model)
        self._stream(completion, on_event, cancel)
        return completion

    def _stream(self, completion: Completion, on_event: StreamCallback | None,
                cancel: threading.Event | None) -> None:
        text, size = completion.text, self._piece_chars
        for start in range(0, len(text), size):
            if cancel is not None and cancel.is_set():
                raise Interrupted("interrupted while the model was answering")
            if on_event is not None:
                on_event(StreamEvent("text", text=text[start:start + size]))
        if cancel is not None and cancel.is_set():
            raise Interrupted("interrupted while the model was answering")
        if on_event is not None:
            for call in completion.tool_calls:
                on_event(StreamEvent("tool_call", name=call.name))

    def count_tokens(self, messages: Sequence[Message], tools: Sequence[Tool] = ()) -> int:
        """The same estimate the real gateways fall back to, so budgets behave alike."""
        return self._counter.request(messages, tools)

    def context_length(self) -> int | None:
        return self._context

    def assert_done(self) -> None:
        """Fail when steps of the script were never used."""
        left = self.remaining
        if left:
            listed = "; ".join(f"#{len(self.requests) + i + 1} {_describe(s)}" for i, s in enumerate(left))
            raise AssertionError(f"ScriptedGateway: {len(left)} step(s) never used after "
                                 f"{len(self.requests)} call(s): {listed}")

    def __enter__(self) -> "ScriptedGateway":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:  # an earlier failure says more than the leftovers would
            self.assert_done()

