"""The one tool-call parser: model text in, tool calls out.

Used by the server (to fill ``tool_calls`` from Qwen output) and by the agent (when a server
returns calls as text). Formats, tried in this order; the first that yields anything wins:

1. ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` blocks (Qwen2.5, Hermes); an
   unclosed last block counts too (generation often stops on ``</tool_call>``). A tag is a call
   only when ``{`` or ``[`` follows it (after whitespace); otherwise it is text that mentions it.
2. JSON in a fenced code block (```` ```json ````), holding one call or a list of calls.
3. A bare ``{"name": …, "arguments": …}`` object (or a list of them) anywhere in the text.
4. ``<tool name="…">{…}</tool>`` tags (the seed's format).

Rules: only names of tools that were offered are accepted (``allowed``); arguments given as a JSON
string are decoded until they are an object; ``parameters`` is accepted for ``arguments`` and the
OpenAI shape ``{"function": {"name", "arguments"}}`` too.

Small models get the shape wrong in a few typical ways, and each is read as the call it means:
arguments flattened beside the name (``{"name": "read_file", "path": "a.py"}``, only for an offered
name), and Python triple-quoted strings (``"content": \"\"\"…\"\"\"``) where JSON wants one string. The
repair of a triple-quoted string keeps its text exactly (it is re-encoded, never rewritten).

Explicit markup (formats 1 and 4) that names an unknown tool or carries undecodable arguments is
reported as a call with ``error`` set, so the model can be told what went wrong. In formats 2 and 3
JSON that is clearly a call (``name`` with ``arguments`` or ``parameters``) of a tool that was not
offered is reported the same way; any other JSON is left alone as plain text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Collection, Iterator

if TYPE_CHECKING:
    from core.toolstream import ToolCallStreamFilter as ToolCallStreamFilter

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"

_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON|tool_call|tool_code)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TAG_RE = re.compile(r"<tool\s+name\s*=\s*[\"']([^\"']+)[\"']\s*>(.*?)(?:</tool>|\Z)", re.DOTALL)
_decoder = json.JSONDecoder()
_lenient = json.JSONDecoder(strict=False)  # raw newlines and tabs inside strings, as models write them
_TRIPLE_VALUE_RE = re.compile(r'("\s*:\s*)("""|\'\'\')(.*?)\2', re.DOTALL)  # after a key, not in code
_CLOSES_STRING = re.compile(r'\s*(?:[,}\]:]|$)')


def _untriple(text: str) -> str:
    """Python triple-quoted values (``"content": \"\"\"…\"\"\"``) re-encoded as JSON strings."""
    return _TRIPLE_VALUE_RE.sub(lambda m: m.group(1) + json.dumps(m.group(3)), text)


def _escape_inner_quotes(text: str) -> str:
    """Escape a ``"`` inside a string value when what follows it cannot end the string.

    Small models write code with its quotes unescaped inside a JSON string (a docstring in
    ``new_text``). A quote ends a string only when a comma, a closing bracket or a colon follows
    it; any other quote inside a string is taken as text. Only used when strict decoding failed.
    """
    out: list[str] = []
    inside = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if inside and ch == "\\":
            out.append(text[i:i + 2])
            i += 2
            continue
        if ch == '"':
            if not inside:
                inside = True
            elif _CLOSES_STRING.match(text, i + 1):
                inside = False
            else:
                out.append('\\"')
                i += 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _raw_decode(text: str, start: int = 0) -> tuple[Any, int]:
    """``json.JSONDecoder.raw_decode``, repairing what small models get wrong when strict decoding fails.

    Repairs, in turn: raw control characters inside strings; Python triple-quoted values; quotes
    left unescaped inside a string. A repair re-encodes text, it never changes it. The end offset
    of a repaired decode is mapped back onto ``text`` (the unrepaired rest must follow it).
    """
    try:
        return _decoder.raw_decode(text, start)
    except json.JSONDecodeError as first:
        error = first
    rest = text[start:]
    for repair in (lambda t: t, _untriple, lambda t: _escape_inner_quotes(_untriple(t))):
        fixed = repair(rest)
        try:
            value, end = _lenient.raw_decode(fixed, 0)
        except json.JSONDecodeError:
            continue
        tail = fixed[end:]
        return value, (len(text) - len(tail) if text.endswith(tail) else len(text))
    raise error


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


def _call_from_obj(obj: Any, allowed: Collection[str] | None, *, explicit: bool,
                   report_shaped: bool = True) -> ParsedCall | None:
    """One call from a decoded JSON value, or ``None`` when the value is not a call at all."""
    if not isinstance(obj, dict):
        return None
    if "function" in obj and isinstance(obj["function"], dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    known = allowed is None or name in allowed
    # JSON in a call's shape (a name with arguments) is reported when it cannot be run, unless it
    # sits inside prose, where it may be data the model is talking about
    shaped = report_shaped and ("arguments" in obj or "parameters" in obj)
    if "arguments" in obj:
        raw = obj["arguments"]
    elif "parameters" in obj:
        raw = obj["parameters"]
    elif known and allowed is not None and len(obj) > 1:
        # arguments flattened beside the name: {"name": "read_file", "path": "a.py"}
        raw = {k: v for k, v in obj.items() if k not in ("name", "type", "id")}
    elif explicit:
        raw = {}
    else:
        return None  # a bare {"name": …} without arguments is just data
    if not known:
        if not (explicit or shaped):
            return None
        offered = ", ".join(sorted(allowed or ())) or "none"
        return ParsedCall(name, {}, f"unknown tool {name!r}; the tools offered are: {offered}")
    try:
        return ParsedCall(name, decode_arguments(raw))
    except ValueError as exc:
        if not (explicit or shaped):
            return None
        return ParsedCall(name, {}, str(exc))


def _calls_from_value(value: Any, allowed: Collection[str] | None, *, explicit: bool,
                      report_shaped: bool = True) -> list[ParsedCall]:
    items = value if isinstance(value, list) else [value]
    calls = [_call_from_obj(item, allowed, explicit=explicit, report_shaped=report_shaped) for item in items]
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
            value, end = _raw_decode(text, j)
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
        value, end = _raw_decode(body, lead)
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


def opens_call(body: str) -> bool | None:
    """Whether the text after a ``<tool_call>`` tag starts a call: its first non-space is ``{`` or ``[``.

    ``None`` while only whitespace follows (a stream must wait; at the end it is text). Any other
    character makes the tag plain text, as in prose that mentions it: ``Use `<tool_call>` tags``.
    """
    rest = body.lstrip()
    if not rest:
        return None
    return rest[0] in "{["


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
        if not opens_call(body):
            content.append(OPEN_TAG)  # a tag mentioned in prose, not a call
            pos = start + len(OPEN_TAG)
            continue
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
                value, _ = _raw_decode(chunk.strip())
                calls.extend(_block_calls(value, allowed))
            except json.JSONDecodeError as exc:
                msg = scanned if isinstance(scanned, str) else f"the text inside <tool_call> is not valid JSON ({exc.msg})"
                calls.append(ParsedCall("", {}, msg))
        if close == -1:
            break
        pos = start + len(OPEN_TAG) + close + len(CLOSE_TAG)
    if not calls:
        return None
    return ParseResult("".join(content).strip(), tuple(calls), "tool_call")


def _parse_fences(text: str, allowed: Collection[str] | None) -> ParseResult | None:
    calls: list[ParsedCall] = []
    spans: list[tuple[int, int]] = []
    for m in _FENCE_RE.finditer(text):
        body = m.group(1).strip()
        try:
            value, end = _raw_decode(body)
        except json.JSONDecodeError:
            continue
        if body[end:].strip():
            continue  # more than one JSON value: not a call
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
    body = text.strip()
    for start, end, value in _json_values(text):
        alone = end - start >= 0.8 * len(body)  # the reply is mostly this JSON: an attempt at a call
        found = _calls_from_value(value, allowed, explicit=False, report_shaped=alone)
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


def __getattr__(name: str) -> Any:
    # the streaming filter lives in core.toolstream (which imports this module); re-exported
    # lazily so that either module can be imported first
    if name == "ToolCallStreamFilter":
        from core.toolstream import ToolCallStreamFilter

        return ToolCallStreamFilter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
