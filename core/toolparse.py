"""The one tool-call parser: model text in, tool calls out.

Used by the server (to fill ``tool_calls`` from Qwen output) and by the agent (when a server
returns calls as text). Formats, tried in this order; the first that yields anything wins:

1. ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` blocks (Qwen2.5, Hermes); an
   unclosed last block counts too (generation often stops on ``</tool_call>``).
2. JSON in a fenced code block (```` ```json ````), holding one call or a list of calls.
3. A bare ``{"name": …, "arguments": …}`` object (or a list of them) anywhere in the text.
4. ``<tool name="…">{…}</tool>`` tags (the seed's format).

Rules: only names of tools that were offered are accepted (``allowed``); arguments given as a JSON
string are decoded until they are an object; ``parameters`` is accepted for ``arguments`` and the
OpenAI shape ``{"function": {"name", "arguments"}}`` too. Text is only ever decoded with a real
JSON decoder: nothing inside a string value is rewritten. Explicit markup (formats 1 and 4) that
names an unknown tool or carries undecodable arguments is reported as a call with ``error`` set, so
the model can be told what went wrong; in formats 2 and 3 such JSON is left alone as plain text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Collection, Iterator

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"

_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON|tool_call|tool_code)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TAG_RE = re.compile(r"<tool\s+name\s*=\s*[\"']([^\"']+)[\"']\s*>(.*?)(?:</tool>|\Z)", re.DOTALL)
_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class ParsedCall:
    """A tool call found in text; ``error`` says why it cannot be run (then ``arguments`` is empty)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class ParseResult:
    """Calls found in a text and the text that is left once their markup is taken out."""

    content: str
    calls: tuple[ParsedCall, ...] = ()
    format: str = ""  # "tool_call" | "fence" | "bare" | "tag" | "" (none found)


def decode_arguments(raw: Any) -> dict[str, Any]:
    """Arguments as an object: decode JSON strings (repeatedly, for double-encoded ones).

    Raises ``ValueError`` with a message fit for the model when they are not an object.
    """
    value = raw
    for _ in range(3):
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return {}
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"arguments are not valid JSON ({exc.msg} at position {exc.pos})") from None
        else:
            break
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"arguments must be a JSON object, got {type(value).__name__}")
    return value


def _call_from_obj(obj: Any, allowed: Collection[str] | None, *, explicit: bool) -> ParsedCall | None:
    """One call from a decoded JSON value, or ``None`` when the value is not a call at all."""
    if not isinstance(obj, dict):
        return None
    if "function" in obj and isinstance(obj["function"], dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    if "arguments" in obj:
        raw = obj["arguments"]
    elif "parameters" in obj:
        raw = obj["parameters"]
    elif explicit:
        raw = {}
    else:
        return None  # a bare {"name": …} without arguments is just data
    known = allowed is None or name in allowed
    if not known:
        if not explicit:
            return None
        offered = ", ".join(sorted(allowed or ())) or "none"
        return ParsedCall(name, {}, f"unknown tool {name!r}; the tools offered are: {offered}")
    try:
        return ParsedCall(name, decode_arguments(raw))
    except ValueError as exc:
        if not explicit:
            return None
        return ParsedCall(name, {}, str(exc))


def _calls_from_value(value: Any, allowed: Collection[str] | None, *, explicit: bool) -> list[ParsedCall]:
    items = value if isinstance(value, list) else [value]
    calls = [_call_from_obj(item, allowed, explicit=explicit) for item in items]
    if any(c is None for c in calls):
        return []  # a list that is not all calls is data, not calls
    return [c for c in calls if c is not None]


def _json_values(text: str) -> Iterator[tuple[int, int, Any]]:
    """Every top-level JSON object or array in ``text``: (start, end, value)."""
    i = 0
    n = len(text)
    while i < n:
        j = min((k for k in (text.find("{", i), text.find("[", i)) if k != -1), default=-1)
        if j == -1:
            return
        try:
            value, end = _decoder.raw_decode(text, j)
        except json.JSONDecodeError:
            i = j + 1
            continue
        yield j, end, value
        i = end


def _scan_block(body: str) -> tuple[int, Any] | None | str:
    """Find where a ``<tool_call>`` block that starts ``body`` ends.

    Returns ``(length of the block including its closing tag, decoded value or None)``, ``None``
    when more text is needed to tell, or an error message when the block is not valid JSON. The
    JSON is decoded first so a closing tag inside a string value does not end the block.
    """
    lead = len(body) - len(body.lstrip())
    try:
        value, end = _decoder.raw_decode(body, lead)
    except json.JSONDecodeError as exc:
        close = body.find(CLOSE_TAG)
        incomplete = exc.pos >= len(body.rstrip()) or exc.msg.startswith("Unterminated string")
        if close == -1 or incomplete:
            return None
        return f"the text inside <tool_call> is not valid JSON ({exc.msg})"
    after = body[end:]
    stripped = after.lstrip()
    if stripped.startswith(CLOSE_TAG):
        return end + (len(after) - len(stripped)) + len(CLOSE_TAG), value
    if not stripped or CLOSE_TAG.startswith(stripped):
        return None
    close = body.find(CLOSE_TAG, end)
    if close == -1:
        return None
    return close + len(CLOSE_TAG), value  # trailing junk inside the block is ignored


def _block_calls(value: Any, allowed: Collection[str] | None) -> list[ParsedCall]:
    found = _calls_from_value(value, allowed, explicit=True)
    return found or [ParsedCall("", {}, 'a <tool_call> block must hold {"name": ..., "arguments": {...}}')]


def _parse_blocks(text: str, allowed: Collection[str] | None) -> ParseResult | None:
    if OPEN_TAG not in text:
        return None
    calls: list[ParsedCall] = []
    content: list[str] = []
    pos = 0
    while True:
        start = text.find(OPEN_TAG, pos)
        if start == -1:
            content.append(text[pos:])
            break
        content.append(text[pos:start])
        body = text[start + len(OPEN_TAG):]
        scanned = _scan_block(body)
        if isinstance(scanned, tuple):
            length, value = scanned
            calls.extend(_block_calls(value, allowed))
            pos = start + len(OPEN_TAG) + length
            continue
        # unclosed last block, or a broken one
        close = body.find(CLOSE_TAG)
        chunk = body if close == -1 else body[:close]
        if chunk.strip():
            try:
                value, _ = _decoder.raw_decode(chunk.strip())
                calls.extend(_block_calls(value, allowed))
            except json.JSONDecodeError as exc:
                msg = scanned if isinstance(scanned, str) else f"the text inside <tool_call> is not valid JSON ({exc.msg})"
                calls.append(ParsedCall("", {}, msg))
        if close == -1:
            break
        pos = start + len(OPEN_TAG) + close + len(CLOSE_TAG)
    return ParseResult("".join(content).strip(), tuple(calls), "tool_call")


def _parse_fences(text: str, allowed: Collection[str] | None) -> ParseResult | None:
    calls: list[ParsedCall] = []
    spans: list[tuple[int, int]] = []
    for m in _FENCE_RE.finditer(text):
        body = m.group(1).strip()
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            continue
        found = _calls_from_value(value, allowed, explicit=False)
        if found:
            calls.extend(found)
            spans.append(m.span())
    if not calls:
        return None
    return ParseResult(_cut(text, spans), tuple(calls), "fence")


def _parse_bare(text: str, allowed: Collection[str] | None) -> ParseResult | None:
    calls: list[ParsedCall] = []
    spans: list[tuple[int, int]] = []
    for start, end, value in _json_values(text):
        found = _calls_from_value(value, allowed, explicit=False)
        if found:
            calls.extend(found)
            spans.append((start, end))
    if not calls:
        return None
    return ParseResult(_cut(text, spans), tuple(calls), "bare")


def _parse_tags(text: str, allowed: Collection[str] | None) -> ParseResult | None:
    if "<tool" not in text:
        return None
    calls: list[ParsedCall] = []
    for m in _TAG_RE.finditer(text):
        name, body = m.group(1).strip(), m.group(2)
        found = _call_from_obj({"name": name, "arguments": body}, allowed, explicit=True)
        if found is not None:
            calls.append(found)
    if not calls:
        return None
    return ParseResult(_TAG_RE.sub("", text).strip(), tuple(calls), "tag")


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        last = end
    out.append(text[last:])
    return "".join(out).strip()


def parse_tool_calls(text: str, allowed: Collection[str] | None = None) -> ParseResult:
    """Find tool calls in model output. ``allowed``: names offered (``None`` accepts any name)."""
    if allowed is not None and not allowed:
        return ParseResult(text)
    for parse in (_parse_blocks, _parse_fences, _parse_bare, _parse_tags):
        result = parse(text, allowed)
        if result is not None and result.calls:
            return result
    return ParseResult(text)


class ToolCallStreamFilter:
    """Splits streamed model text into answer text and tool calls without leaking markup.

    Feed text pieces with :meth:`feed`; each returns the answer text that is safe to show now.
    Text that might be the start of a call is held back: a ``<tool_call>`` block (or the start of
    one, like ``<tool_``), and, when the output *begins* with ``{``, ``[``, a code fence or
    ``<tool``, the whole output, because formats 2-4 can only be judged once complete.
    :meth:`finish` parses what was held back and returns a :class:`ParseResult` whose ``calls`` are
    all the calls of the output and whose ``content`` is only the text not shown yet. A call in
    formats 2-4 that follows prose is still found at the end (its text was shown by then), except
    a code fence (```` ``` ```` or ```` ```json ````) that starts a line: it is held back until it
    closes, then dropped if it holds only calls (returned at :meth:`finish`) or shown if not.
    """

    def __init__(self, allowed: Collection[str] | None = None) -> None:
        self.allowed = allowed
        self._pending = ""  # held back, not yet shown
        self._all: list[str] = []  # everything fed
        self._decided = False  # seen enough of the start to know how to stream
        self._hold_all = False
        self._in_block = False
        self._in_fence = False  # _pending starts with a held-back code fence
        self._line_start = True  # _pending starts at the beginning of a line
        self._in_other_fence = False  # _pending starts inside a fence that cannot hold a call (```python)
        self._calls: list[ParsedCall] = []
        self._format = ""

    def feed(self, piece: str) -> str:
        self._all.append(piece)
        self._pending += piece
        if not self._decided:
            s = self._pending.lstrip()
            if not s:
                return ""
            if s[0] in "{[`":
                self._hold_all = True
            elif s[0] == "<" and not s.startswith(OPEN_TAG):
                if OPEN_TAG.startswith(s) or "<tool ".startswith(s):
                    return ""  # too short to tell yet
                self._hold_all = s.startswith("<tool")
            self._decided = True
        if self._hold_all:
            return ""
        return self._drain()

    def _show(self, shown: list[str], upto: int) -> None:
        """Move ``_pending[:upto]`` to the shown text."""
        if upto <= 0:
            return
        text, self._pending = self._pending[:upto], self._pending[upto:]
        shown.append(text)
        lines = text.split("\n")
        if not self._line_start:
            lines = lines[1:]  # the rest of a line that started earlier
        for line in lines[:-1]:  # complete lines only
            if _is_fence_line(line):
                self._in_other_fence = bool(line[len(FENCE):].strip()) if self._in_other_fence else True
        self._line_start = text.endswith("\n")

    def _drain(self) -> str:
        shown: list[str] = []
        while True:
            if self._in_fence:
                end = _fence_end(self._pending)
                if end is None:
                    return "".join(shown)
                if self._take_fence(self._pending[:end]):
                    self._pending = self._pending[end:]
                else:
                    self._show(shown, end)
                self._in_fence = False
                continue
            if self._in_block:
                scanned = _scan_block(self._pending)
                if scanned is None:
                    return "".join(shown)
                if isinstance(scanned, str):
                    close = self._pending.find(CLOSE_TAG)
                    self._calls.append(ParsedCall("", {}, scanned))
                    self._pending = self._pending[close + len(CLOSE_TAG):]
                else:
                    length, value = scanned
                    self._calls.extend(_block_calls(value, self.allowed))
                    self._pending = self._pending[length:]
                self._format = "tool_call"
                self._in_block = False
                continue
            start = self._pending.find(OPEN_TAG)
            fence, undecided = _fence_start(self._pending, self._line_start, self._in_other_fence)
            if fence != -1 and (start == -1 or fence < start):
                self._show(shown, fence)
                self._in_fence = True
                continue
            if start != -1 and (undecided == -1 or start < undecided):
                self._show(shown, start)
                self._pending = self._pending[len(OPEN_TAG):]
                self._in_block = True
                continue
            # hold back a tail that could be the beginning of "<tool_call>", or of a fence
            keep = _partial_suffix(self._pending, OPEN_TAG)
            cut = len(self._pending) - keep
            if undecided != -1:
                cut = min(cut, undecided)
            self._show(shown, cut)
            return "".join(shown)

    def _take_fence(self, fenced: str) -> bool:
        """A held-back fence: keep its calls and return ``True`` when it holds calls and nothing else."""
        _, _, body = fenced.partition("\n")
        body = body.rstrip()
        if body.endswith(FENCE):
            body = body[:-len(FENCE)]
        parsed = parse_tool_calls(body.strip(), self.allowed)
        if not parsed.calls or parsed.content.strip():
            return False
        self._calls.extend(parsed.calls)
        self._format = self._format or "fence"
        return True

    def _take_block(self, body: str) -> None:
        parsed = _parse_blocks(OPEN_TAG + body, self.allowed)
        self._format = "tool_call"
        if parsed is not None:
            self._calls.extend(parsed.calls)

    @property
    def calls(self) -> tuple[ParsedCall, ...]:
        """Calls completed so far (blocks, and fences that start a line; the others are known at :meth:`finish`)."""
        return tuple(self._calls)

    def finish(self) -> ParseResult:
        rest, self._pending = self._pending, ""
        if self._in_fence:
            self._in_fence = False
            if self._take_fence(rest):
                rest = ""
        elif self._in_block:
            self._in_block = False
            if rest.strip():
                self._take_block(rest)
            rest = ""
        elif self._hold_all or not self._decided:
            parsed = parse_tool_calls(rest, self.allowed)
            if parsed.calls:
                self._calls.extend(parsed.calls)
                self._format = self._format or parsed.format
                rest = parsed.content
        if not self._calls:
            # a fenced or bare call after some prose: its text is out, but the call is not lost
            parsed = parse_tool_calls("".join(self._all), self.allowed)
            if parsed.calls:
                self._calls.extend(parsed.calls)
                self._format = parsed.format
                rest = ""
        return ParseResult(rest, tuple(self._calls), self._format)


FENCE = "```"
#: info strings of a fence that may hold a call (the others, like ```python, stream as they come)
CALL_FENCE_INFO = ("", "json", "tool_call", "tool_code")


def _is_fence_line(line: str) -> bool:
    return line.startswith(FENCE)


def _fence_start(text: str, line_start: bool, in_other: bool) -> tuple[int, int]:
    """Where a fence that may hold a call opens at the start of a line, and where the first undecided one opens.

    ``in_other``: ``text`` starts inside a fence that cannot hold a call (```` ```python ````), whose
    closing line opens nothing. Undecided: the line is not complete yet (or the text ends in a
    backtick or two at the start of a line), so whether it opens such a fence is not known. ``-1``: none.
    """
    pos = 0 if line_start else text.find("\n") + 1
    if pos == 0 and not line_start:
        return -1, -1  # no line starts in this text
    while pos < len(text):
        line_end = text.find("\n", pos)
        line = text[pos:] if line_end == -1 else text[pos:line_end]
        if line_end == -1:
            held = FENCE.startswith(line) or _is_fence_line(line)
            return -1, pos if held else -1
        if _is_fence_line(line):
            if in_other:
                in_other = bool(line[len(FENCE):].strip())  # a bare ``` closes it
            elif line[len(FENCE):].strip().lower() in CALL_FENCE_INFO:
                return pos, pos
            else:
                in_other = True
        pos = line_end + 1
    return -1, -1


def _fence_end(text: str) -> int | None:
    """The end of the fence ``text`` opens (after its closing line), or ``None`` while it is open.

    The closing ```` ``` ```` must start a line: a fence inside a JSON string value cannot, as
    JSON writes a newline in a string as ``\\n``.
    """
    pos = text.find("\n")
    while pos != -1:
        line_end = text.find("\n", pos + 1)
        line = text[pos + 1:] if line_end == -1 else text[pos + 1:line_end]
        if line_end == -1:
            return None  # the closing line is not complete: its newline is part of the fence
        if _is_fence_line(line) and not line[len(FENCE):].strip():
            return line_end + 1
        pos = line_end
    return None


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0
