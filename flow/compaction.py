"""Compaction: the model summarises the part of a session that no longer fits into one message.

The summary keeps what the work needs to go on: the task, decisions, files touched, open items.
It is written by the same gateway without tools, in as many calls as it takes for the dropped
part to fit the context (each call folds one more chunk into the summary so far). When the model
cannot do it (a gateway error, an empty reply) a plain summary is built from the messages
themselves, so the run goes on instead of failing.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

from core.errors import GatewayError, Interrupted
from core.gateway import ModelGateway
from core.messages import Message, Usage
from core.tokens import CHARS_PER_TOKEN
from store.sessions import StoredMessage

SUMMARY_HEADER = "[Summary of earlier work in this session; the messages it replaces no longer fit the context]"

INSTRUCTIONS = (
    "You summarise the earlier part of a coding agent's session so the agent can continue without it. "
    "Write plain text under these headings: Task, Decisions, Files touched, Open items. "
    "Keep exact file names, function names, commands, error messages and numbers. "
    "Be brief: at most {words} words. Do not call tools."
)


@dataclass
class Summary:
    """A compaction's result: the message that stays, what it cost, and whether the model wrote it."""

    message: Message
    usage: Usage
    by_model: bool
    calls: int


def render(entries: Sequence[StoredMessage], *, result_chars: int = 600) -> str:
    """The dropped messages as a transcript, tool outputs shortened."""
    lines = []
    for entry in entries:
        msg = entry.message
        if entry.kind == "summary":
            lines.append(f"Earlier summary:\n{msg.content.removeprefix(SUMMARY_HEADER).strip()}")
        elif msg.role == "user":
            lines.append(f"User: {msg.content}")
        elif msg.role == "assistant":
            if msg.content.strip():
                lines.append(f"Assistant: {msg.content.strip()}")
            for call in msg.tool_calls:
                args = json.dumps(dict(call.arguments), ensure_ascii=False)
                if len(args) > 300:
                    args = args[:300] + "…"
                lines.append(f"Assistant called {call.name} {args}")
        elif msg.role == "tool":
            text = msg.content.strip()
            if len(text) > result_chars:
                text = text[: result_chars // 2] + " … " + text[-result_chars // 2:]
            lines.append(f"Result of {msg.name or 'tool'}: {text}")
    return "\n".join(lines)


def plain_summary(entries: Sequence[StoredMessage], reason: str) -> str:
    """A summary built without the model: the requests, the calls made, the last words."""
    asks = [e.message.content.strip()[:300] for e in entries if e.message.role == "user" and e.kind != "summary"]
    earlier = [e.message.content.removeprefix(SUMMARY_HEADER).strip()[:1200] for e in entries if e.kind == "summary"]
    calls = []
    for e in entries:
        for call in e.message.tool_calls:
            target = next((str(v) for k, v in call.arguments.items() if k in ("path", "file_path", "command", "query")), "")
            calls.append(f"{call.name} {target[:80]}".strip())
    said = [e.message.content.strip()[:300] for e in entries if e.message.role == "assistant" and e.message.content.strip()]
    parts = [f"(Written without the model: {reason}.)"]
    if earlier:
        parts.append("Earlier summary: " + " ".join(earlier))
    if asks:
        parts.append("Requests: " + " | ".join(asks))
    if calls:
        parts.append("Tool calls made: " + "; ".join(calls[-30:]))
    if said:
        parts.append("Last said: " + said[-1])
    return "\n".join(parts)


class Compactor:
    """Turns dropped messages into one summary message, with the model when it can."""

    def __init__(self, gateway: ModelGateway, *, limit_tokens: int, summary_tokens: int,
                 temperature: float = 0.0) -> None:
        self.gateway = gateway
        self.limit_tokens = limit_tokens
        self.summary_tokens = summary_tokens
        self.temperature = temperature

    def summarise(self, entries: Sequence[StoredMessage], *, cancel: threading.Event | None = None,
                  on_retry: Callable[[str], None] | None = None, factor: float = 1.0) -> Summary:
        """The summary of ``entries``; ``factor`` is the token counter's calibration (real/estimated)."""
        transcript = render(entries)
        words = max(40, int(self.summary_tokens * 0.6))
        system = Message.system(INSTRUCTIONS.format(words=words))
        # what one call can carry: the limit less instructions, the summary so far and its reply
        room_tokens = self.limit_tokens - 2 * self.summary_tokens - math.ceil(len(system.content) / CHARS_PER_TOKEN) - 40
        chunk_chars = max(400, int(room_tokens * CHARS_PER_TOKEN / max(factor, 0.3)))
        chunks = [transcript[i:i + chunk_chars] for i in range(0, len(transcript), chunk_chars)] or [""]
        usage = Usage()
        summary = ""
        calls = 0
        try:
            for chunk in chunks:
                if cancel is not None and cancel.is_set():
                    raise Interrupted("interrupted while compacting the context")
                prompt = (f"Summary so far:\n{summary}\n\n" if summary else "") + f"Conversation part:\n{chunk}"
                completion = self.gateway.complete([system, Message.user(prompt)], (),
                                                   max_tokens=self.summary_tokens,
                                                   temperature=self.temperature, cancel=cancel)
                calls += 1
                usage = usage + completion.usage
                text = completion.message.content.strip()
                if not text:
                    raise GatewayError("the model returned an empty summary")
                summary = text
        except GatewayError as exc:
            if on_retry is not None:
                on_retry(f"the model could not summarise ({exc.message}); a plain summary is used")
            plain = plain_summary(entries, exc.message)[: int(self.summary_tokens * CHARS_PER_TOKEN)]
            return Summary(Message.user(f"{SUMMARY_HEADER}\n{plain}"), usage, False, calls)
        return Summary(Message.user(f"{SUMMARY_HEADER}\n{summary}"), usage, True, calls)
