"""The streaming side of the tool-call parser: answer text out as it comes, calls held back.

Built on :mod:`core.toolparse` (the one parser); ``from core.toolparse import
ToolCallStreamFilter`` keeps working.
"""

from __future__ import annotations

from typing import Collection

from core.toolparse import (CLOSE_TAG, OPEN_TAG, ParsedCall, ParseResult, _block_calls, _parse_blocks, _scan_block,
                            opens_call, parse_tool_calls)


class ToolCallStreamFilter:
    """Splits streamed model text into answer text and tool calls without leaking markup.

    Feed text pieces with :meth:`feed`; each returns the answer text that is safe to show now.
    Text that might be the start of a call is held back: a ``<tool_call>`` block (or the start of
    one, like ``<tool_``; a tag is held only until its first non-space character shows whether a
    call follows, ``{`` or ``[``, or it is prose that mentions the tag), and, when the output *begins* with ``{``, ``[``, a code fence or
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
                opens = opens_call(self._pending[start + len(OPEN_TAG):])
                if opens is None:  # hold the tag until its first non-space character is known
                    self._show(shown, start)
                    return "".join(shown)
                if not opens:  # prose that mentions the tag
                    self._show(shown, start + len(OPEN_TAG))
                    continue
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
