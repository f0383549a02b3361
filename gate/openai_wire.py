"""The OpenAI chat wire format: our dataclasses to and from its JSON, and a reply assembled.

Only what the OpenAI chat-completions API defines is used, so the same JSON works against this
project's server, llama.cpp's llama-server, vLLM, Ollama and LM Studio. Tool-call arguments are
a ``dict`` in the program and a JSON string on the wire.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Sequence

from core.errors import GatewayError
from core.messages import Completion, FinishReason, Message, ToolCall, Usage, new_call_id
from core.toolparse import ParsedCall, ToolCallStreamFilter, decode_arguments, parse_tool_calls

#: name sent for a recorded call whose name the model never gave (so its result still pairs up)
INVALID_CALL_NAME = "invalid_tool_call"

_FINISH: dict[str, FinishReason] = {
    "stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
    "content_filter": "content_filter", "eos": "stop", "eos_token": "stop",
}


def message_to_openai(message: Message) -> dict[str, Any]:
    """One message as an OpenAI chat message dict."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name or INVALID_CALL_NAME,
                          "arguments": json.dumps(dict(c.arguments), ensure_ascii=False)}}
            for c in message.tool_calls
        ]
    return out


def messages_to_openai(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [message_to_openai(m) for m in messages]


def message_from_openai(data: Mapping[str, Any], allowed: Collection[str] | None = None) -> Message:
    """An OpenAI chat message dict as a :class:`Message` (``allowed``: tool names offered)."""
    role = data.get("role") or "assistant"
    content = data.get("content") or ""
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if role == "tool":
        return Message("tool", content, tool_call_id=data.get("tool_call_id") or "", name=data.get("name"))
    calls = tuple(tool_call_from_openai(c, allowed) for c in data.get("tool_calls") or ())
    return Message(role, content, calls)


def tool_call_from_openai(data: Mapping[str, Any], allowed: Collection[str] | None) -> ToolCall:
    """An OpenAI ``tool_calls`` entry as a :class:`ToolCall`; problems are kept in ``error``."""
    fn = data.get("function") or {}
    return checked_call(fn.get("name") or "", fn.get("arguments"), data.get("id") or new_call_id(), allowed)


def checked_call(name: str, raw_arguments: Any, call_id: str, allowed: Collection[str] | None) -> ToolCall:
    """A call whose unknown name or undecodable arguments become ``error`` for the model to read."""
    if not name:
        return ToolCall("", {}, call_id, error="the tool call has no function name")
    if allowed is not None and name not in allowed:
        offered = ", ".join(sorted(allowed)) or "none"
        return ToolCall(name, {}, call_id, error=f"unknown tool {name!r}; the tools offered are: {offered}")
    try:
        return ToolCall(name, decode_arguments(raw_arguments), call_id)
    except ValueError as exc:
        return ToolCall(name, {}, call_id, error=str(exc))


def from_parsed(call: ParsedCall) -> ToolCall:
    return ToolCall(call.name, call.arguments, new_call_id(), error=call.error)


def finish_reason(raw: Any, has_calls: bool) -> FinishReason:
    if has_calls:
        return "tool_calls"
    return _FINISH.get(str(raw), "stop") if raw else "stop"


def usage_from_openai(data: Mapping[str, Any] | None) -> Usage:
    if not data:
        return Usage()
    details = data.get("prompt_tokens_details") or {}
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0),
                 int(details.get("cached_tokens") or 0))


def completion_from_openai(body: Mapping[str, Any], allowed: Collection[str] | None, model: str) -> Completion:
    """A non-streamed chat completion as a :class:`Completion`, tool calls from either channel."""
    choices = body.get("choices")
    if not choices or not isinstance(choices, list):
        raise GatewayError(f"the server's reply has no choices: {json.dumps(body)[:200]}")
    choice = choices[0]
    message = message_from_openai(choice.get("message") or {}, allowed)
    content, calls = message.content, message.tool_calls
    if not calls and allowed:
        parsed = parse_tool_calls(content, allowed)
        if parsed.calls:
            content, calls = parsed.content, tuple(from_parsed(c) for c in parsed.calls)
    return Completion(Message.assistant(content, calls), finish_reason(choice.get("finish_reason"), bool(calls)),
                      usage_from_openai(body.get("usage")), body.get("model") or model)


def as_chunk(body: Mapping[str, Any]) -> dict[str, Any]:
    """A whole (non-streamed) reply as one stream chunk, for servers that ignore ``stream``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("choices"), list):
        raise GatewayError(f"the server's reply has no choices: {json.dumps(body)[:200]}")
    choices = [{"index": c.get("index", 0), "delta": c.get("message") or {}, "finish_reason": c.get("finish_reason")}
               for c in body["choices"] if isinstance(c, Mapping)]
    return {**{k: v for k, v in body.items() if k != "choices"}, "choices": choices}


@dataclass(frozen=True)
class PromptProgress:
    """How far the server is through the prompt (llama-server's ``prompt_progress`` chunk field)."""

    total: int
    cache: int  # tokens reused from the server's cache (not processed again)
    processed: int  # tokens read so far, the reused ones included
    time_ms: float


def prompt_progress(raw: Any) -> PromptProgress | None:
    """A ``prompt_progress`` object as sent by llama-server (``total``, ``cache``, ``processed``, ``time_ms``)."""
    if not isinstance(raw, Mapping):
        return None
    try:
        total, processed = int(raw.get("total") or 0), int(raw.get("processed") or 0)
        cache, time_ms = int(raw.get("cache") or 0), float(raw.get("time_ms") or 0.0)
    except (TypeError, ValueError):
        return None
    if total <= 0 or processed < 0:
        return None
    return PromptProgress(total, max(0, cache), min(processed, total), max(0.0, time_ms))


@dataclass
class _Slot:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class StreamAssembler:
    """Builds one :class:`Completion` from streamed chat-completion chunks.

    Text goes through :class:`core.toolparse.ToolCallStreamFilter` so ``<tool_call>`` markup is
    held back; :meth:`feed` returns the events to show: ``("text", piece)`` and
    ``("tool_call", name)`` when a call starts. Native ``tool_calls`` deltas are joined by
    ``index`` (an id or name alone starts a new call for servers that send no index).
    """

    def __init__(self, allowed: Collection[str] | None, model: str) -> None:
        self.allowed = allowed
        self.model = model
        self._filter = ToolCallStreamFilter(allowed) if allowed else None
        self._text: list[str] = []
        self._shown: list[str] = []
        self._slots: dict[int, _Slot] = {}
        self._text_calls_seen = 0
        self.finish: Any = None
        self.usage = Usage()

    def feed(self, chunk: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """The events ``chunk`` brings: ``("text", piece)``, ``("tool_call", name)``, ``("progress", PromptProgress)``."""
        events: list[tuple[str, Any]] = []
        progress = prompt_progress(chunk.get("prompt_progress"))
        if progress is not None:
            events.append(("progress", progress))
        if chunk.get("usage"):
            self.usage = usage_from_openai(chunk["usage"])
        if chunk.get("model"):
            self.model = chunk["model"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if piece:
                events.extend(self._feed_text(piece))
            for part in delta.get("tool_calls") or ():
                events.extend(self._feed_call(part))
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return events

    def _feed_text(self, piece: str) -> list[tuple[str, str]]:
        self._text.append(piece)
        if self._filter is None:
            self._shown.append(piece)
            return [("text", piece)]
        out: list[tuple[str, str]] = []
        shown = self._filter.feed(piece)
        if shown:
            self._shown.append(shown)
            out.append(("text", shown))
        for call in self._filter.calls[self._text_calls_seen:]:
            out.append(("tool_call", call.name))
        self._text_calls_seen = len(self._filter.calls)
        return out

    def _feed_call(self, part: Mapping[str, Any]) -> list[tuple[str, str]]:
        fn = part.get("function") or {}
        index = part.get("index")
        if not isinstance(index, int):
            starts_new = bool(part.get("id") or fn.get("name")) or not self._slots
            index = len(self._slots) if starts_new else max(self._slots)
        slot = self._slots.setdefault(index, _Slot())
        out: list[tuple[str, str]] = []
        if part.get("id"):
            slot.id = part["id"]
        if fn.get("name"):
            if not slot.name:
                out.append(("tool_call", fn["name"]))
            slot.name = fn["name"] if not slot.name or slot.name == fn["name"] else slot.name + fn["name"]
        args = fn.get("arguments")
        if args:
            slot.arguments.append(args if isinstance(args, str) else json.dumps(args))
        return out

    def close(self) -> tuple[Completion, list[tuple[str, str]]]:
        """The completion, and the events still to show (text held back that was not a call)."""
        events: list[tuple[str, str]] = []
        text_calls: tuple[ToolCall, ...] = ()
        content = "".join(self._text)
        if self._filter is not None:
            result = self._filter.finish()
            for call in result.calls[self._text_calls_seen:]:
                events.append(("tool_call", call.name))
            if result.calls:
                text_calls = tuple(from_parsed(c) for c in result.calls)
                reparsed = parse_tool_calls(content, self.allowed)
                content = reparsed.content if reparsed.calls else "".join(self._shown) + result.content
            if result.content:
                events.append(("text", result.content))
        native = tuple(checked_call(s.name, "".join(s.arguments), s.id or new_call_id(), self.allowed)
                       for _, s in sorted(self._slots.items()))
        calls = native or text_calls
        message = Message.assistant(content, calls)
        return Completion(message, finish_reason(self.finish, bool(calls)), self.usage, self.model), events
