"""The context budget: fit a session into the model's context, minus the reply budget.

Each step the request is built from the session's history, cheapest remedy first:

1. clip each tool result (head and tail kept, a note saying how to see more);
2. replace old tool outputs (and long arguments of old calls) with one-line stubs, oldest first;
3. drop the oldest whole rounds, never separating a tool call from its result, down to a low
   watermark so the next steps have room; the dropped part is handed back in
   :attr:`Request.dropped` for the loop to compact (``flow/compaction.py``) into one summary
   message that stays in the session.

The system prompt (with the plan and recalled memories), the current task and the newest round
are never dropped. If they alone do not fit, :class:`core.errors.BudgetExceeded` (``context``).

Counting is cheap: each message's size is estimated once (characters per token, cached per
message and variant) and scaled by a factor calibrated against the server's own counts: the
``prompt_tokens`` of every reply, and an exact ``gateway.count_tokens`` call only when an estimate
comes near the limit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Sequence

from core.errors import BudgetExceeded
from core.gateway import ModelGateway
from core.messages import Message, ToolCall
from core.tokens import CHARS_PER_TOKEN
from core.tools import Tool
from store.sessions import StoredMessage
from tool.registry import clip_text

#: tokens a chat template adds around each message (role markers, separators)
MESSAGE_OVERHEAD = 4
#: an estimate above this share of the limit is checked with the gateway's exact count
EXACT_CHECK_SHARE = 0.8
#: after dropping rounds, the request is cut down to this share of the limit, so the next
#: steps have room before another compaction
LOW_WATERMARK = 0.6
#: long string arguments of old calls (file contents written earlier) are cut to this many characters
STUB_ARGUMENT_CHARS = 120


def reply_budget(context_length: int, max_reply_tokens: int) -> int:
    """Tokens kept free for the reply: the setting, but at most a quarter of a small context."""
    return max(64, min(max_reply_tokens, context_length // 4))


class TokenCounter:
    """Calibrated token estimates; exact counts come from the gateway only when they matter."""

    def __init__(self, gateway: ModelGateway) -> None:
        self.gateway = gateway
        self.factor = 1.0
        self._tools_key: tuple[str, ...] = ()
        self._tools_raw = 0
        self.exact_calls = 0

    @staticmethod
    def raw(message: Message) -> int:
        """Uncalibrated estimate of one message."""
        size = len(message.content)
        for call in message.tool_calls:
            size += len(call.name) + len(json.dumps(dict(call.arguments), ensure_ascii=False)) + 12
        return MESSAGE_OVERHEAD + math.ceil(size / CHARS_PER_TOKEN)

    def raw_tools(self, tools: Sequence[Tool]) -> int:
        key = tuple(f"{t.name}:{len(t.description)}:{len(t.parameters)}" for t in tools)
        if key != self._tools_key:
            text = json.dumps([t.spec() for t in tools], ensure_ascii=False) if tools else ""
            self._tools_key, self._tools_raw = key, math.ceil(len(text) / CHARS_PER_TOKEN)
        return self._tools_raw

    def scale(self, raw: int) -> int:
        return math.ceil(raw * self.factor)

    def calibrate(self, raw: int, actual: int) -> None:
        """Learn from a real count of a request whose raw estimate was ``raw``."""
        if raw <= 0 or actual <= 0:
            return
        ratio = min(4.0, max(0.3, actual / raw))
        # never keep underestimating: jump up at once, come down slowly
        self.factor = ratio if ratio > self.factor else 0.7 * self.factor + 0.3 * ratio

    def exact(self, messages: Sequence[Message], tools: Sequence[Tool]) -> int:
        self.exact_calls += 1
        return self.gateway.count_tokens(messages, tools)


@dataclass
class Request:
    """What to send for the next model call, and what had to be left out."""

    messages: list[Message]
    tokens: int  # calibrated estimate, or exact when ``exact``
    raw: int  # uncalibrated estimate, for calibrating against the reply's prompt_tokens
    limit: int
    exact: bool = False
    stubbed: int = 0
    clipped: int = 0
    dropped: list[StoredMessage] = field(default_factory=list)


def rounds(history: Sequence[StoredMessage]) -> list[list[StoredMessage]]:
    """The history in units that are kept or dropped whole: a call with its results, or one message.

    A tool result whose call is not right before it cannot be sent (strict servers reject it)
    and is left out.
    """
    units: list[list[StoredMessage]] = []
    i, n = 0, len(history)
    while i < n:
        entry = history[i]
        msg = entry.message
        if msg.role == "assistant" and msg.tool_calls:
            ids = {c.id for c in msg.tool_calls}
            unit = [entry]
            i += 1
            while i < n and history[i].message.role == "tool" and history[i].message.tool_call_id in ids:
                unit.append(history[i])
                i += 1
            units.append(unit)
        elif msg.role == "tool":
            i += 1  # orphaned result
        else:
            units.append([entry])
            i += 1
    return units


def stub_result(message: Message) -> Message:
    """A one-line stand-in for an old tool output."""
    first = message.content.strip().splitlines()[0][:80] if message.content.strip() else ""
    status = "failed" if first.startswith("Error") else "ok"
    text = (f"[old output of {message.name or 'the tool'} left out to save context ({status}, "
            f"{len(message.content)} characters); call it again if you need it]")
    return replace(message, content=text)


def stub_calls(message: Message) -> Message:
    """An old assistant message whose long string arguments are cut (file contents written earlier)."""
    calls = []
    changed = False
    for call in message.tool_calls:
        args = {}
        for key, value in call.arguments.items():
            if isinstance(value, str) and len(value) > STUB_ARGUMENT_CHARS:
                args[key] = value[:STUB_ARGUMENT_CHARS] + f"… [{len(value) - STUB_ARGUMENT_CHARS} more characters]"
                changed = True
            else:
                args[key] = value
        calls.append(ToolCall(call.name, args, call.id, call.error))
    return replace(message, tool_calls=tuple(calls)) if changed else message


class ContextBudget:
    """Builds each request so it fits ``context_length - reply_tokens``."""

    def __init__(self, gateway: ModelGateway, *, context_length: int, reply_tokens: int,
                 tool_result_tokens: int = 2000, counter: TokenCounter | None = None) -> None:
        if context_length <= reply_tokens:
            raise ValueError(f"context of {context_length} tokens leaves nothing after a reply of {reply_tokens}")
        self.gateway = gateway
        self.context_length = context_length
        self.reply_tokens = reply_tokens
        self.limit = context_length - reply_tokens
        self.tool_result_tokens = tool_result_tokens
        self.counter = counter or TokenCounter(gateway)
        self._cache: dict[tuple[int, str], tuple[Message, int]] = {}

    def forget(self) -> None:
        """Drop cached counts (a different session is about to be built)."""
        self._cache.clear()

    def _view(self, entry: StoredMessage, variant: str, cap: int) -> tuple[Message, int]:
        key = (entry.seq, variant if variant != "clip" else f"clip{cap}")
        found = self._cache.get(key)
        if found is None:
            msg = entry.message
            if variant == "clip":
                msg = replace(msg, content=clip_text(msg.content, cap))
            elif variant == "stub":
                stub = stub_result(msg) if msg.role == "tool" else stub_calls(msg)
                msg = stub if len(stub.content) < len(msg.content) or msg.role != "tool" else msg
            found = (msg, TokenCounter.raw(msg))
            self._cache[key] = found
        return found

    def build(self, system: Message | Sequence[Message], history: Sequence[StoredMessage], tools: Sequence[Tool], *,
              task_seq: int | None = None) -> Request:
        """The request for the next call; raises :class:`BudgetExceeded` when even the minimum does not fit.

        ``system``: the leading system message(s), always sent whole.
        """
        system = [system] if isinstance(system, Message) else list(system)
        for _ in range(3):
            request = self._plan(system, history, tools, task_seq)
            if self.counter.scale(request.raw) < EXACT_CHECK_SHARE * self.limit:
                return request
            exact = self.counter.exact(request.messages, tools)
            self.counter.calibrate(request.raw, exact)
            if exact <= self.limit:
                request.tokens, request.exact = exact, True
                return request
        raise self._overflow(request.tokens)

    def _overflow(self, tokens: int) -> BudgetExceeded:
        return BudgetExceeded(
            f"the system prompt, the task and the latest step need about {tokens} tokens, more than the "
            f"{self.limit} this model's context leaves after the reply budget",
            budget="context", hint="use a model with a longer context (AGENT_CTX), or a shorter task")

    def _plan(self, system: list[Message], history: Sequence[StoredMessage], tools: Sequence[Tool],
              task_seq: int | None) -> Request:
        scale = self.counter.scale
        fixed = sum(TokenCounter.raw(m) for m in system) + self.counter.raw_tools(tools)
        units = rounds(history)
        room = max(1, self.limit - scale(fixed))
        # one tool result may take a quarter of what is left, but never more than the setting;
        # rounded so a system prompt that changes a little does not re-clip (and re-cache) everything
        cap = max(50, min(self.tool_result_tokens, room // 4) // 50 * 50)
        pinned = {i for i, unit in enumerate(units) if any(e.seq == task_seq for e in unit)}
        if units:
            pinned.add(len(units) - 1)  # the newest round is what the model must react to

        variant: list[list[str]] = []
        clipped = 0
        for unit in units:
            row = []
            for entry in unit:
                big = entry.message.role == "tool" and TokenCounter.raw(entry.message) > cap
                row.append("clip" if big else "full")
                clipped += big
            variant.append(row)

        def size(i: int) -> int:
            return sum(self._view(e, variant[i][k], cap)[1] for k, e in enumerate(units[i]))

        sizes = [size(i) for i in range(len(units))]
        total = fixed + sum(sizes)
        stubbed = 0
        # 2. stubs for old outputs, oldest first
        if scale(total) > self.limit:
            for i, unit in enumerate(units):
                if i in pinned or scale(total) <= self.limit:
                    continue
                if not (unit[0].message.tool_calls or unit[0].message.role == "tool"):
                    continue
                variant[i] = ["stub"] * len(unit)
                new = size(i)
                total += new - sizes[i]
                sizes[i] = new
                stubbed += len(unit) - 1
        # 3. drop oldest whole rounds, down to the low watermark
        keep = [True] * len(units)
        if scale(total) > self.limit:
            target = LOW_WATERMARK * self.limit
            for i in range(len(units)):
                if scale(total) <= target:
                    break
                if i in pinned:
                    continue
                keep[i] = False
                total -= sizes[i]
        # last resort: the pinned rounds' tool results cut harder
        if scale(total) > self.limit:
            results = [(i, k) for i in range(len(units)) if keep[i]
                       for k, e in enumerate(units[i]) if e.message.role == "tool"]
            if results:
                spare = self.limit / self.counter.factor - (total - sum(
                    self._view(units[i][k], variant[i][k], cap)[1] for i, k in results))
                small = max(30, int(spare / len(results)) - MESSAGE_OVERHEAD)
                for i, k in results:
                    entry = units[i][k]
                    before = self._view(entry, variant[i][k], cap)[1]
                    variant[i][k] = "clip"
                    total += self._view(entry, "clip", small)[1] - before
                cap_for = {(i, k): small for i, k in results}
            else:
                cap_for = {}
        else:
            cap_for = {}
        messages = list(system)
        dropped: list[StoredMessage] = []
        for i, unit in enumerate(units):
            if not keep[i]:
                dropped.extend(unit)
                continue
            for k, entry in enumerate(unit):
                messages.append(self._view(entry, variant[i][k], cap_for.get((i, k), cap))[0])
        if scale(total) > self.limit:
            raise self._overflow(scale(total))
        return Request(messages, scale(total), total, self.limit, stubbed=stubbed, clipped=clipped,
                       dropped=dropped)
