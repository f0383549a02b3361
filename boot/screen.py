"""What a person sees while the agent works: two :class:`flow.events.AgentEvents` listeners.

:class:`PlainScreen` is for ``-p`` (scripts and pipes): the answer streams to stdout, tool calls
and progress go to stderr, and the spinner only appears when stderr is a terminal.
:class:`ChatScreen` is for the interactive chat (rich): the answer streams into a live region
and is rendered as markdown once complete, tool lines print above it.

The loop calls these from the thread that runs it; the spinner has its own thread. Every piece
of shared state is behind one lock.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
from typing import IO, Any, Mapping

from core.messages import ToolCall, Usage
from core.tools import ToolResult
from flow.events import AgentEvents, RunResult

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
#: longest argument value shown in a tool line
ARG_CHARS = 40
#: longest tool line
LINE_CHARS = 160


# --- short forms ---------------------------------------------------------------------------------

def short(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: max(1, limit - 1)] + "…"


def call_brief(call: ToolCall) -> str:
    """``write_file(path='a.py', text='def f():…')``: a tool call on one short line."""
    args = ", ".join(f"{k}={_value_brief(v)}" for k, v in call.arguments.items())
    return short(f"{call.name}({args})", LINE_CHARS)


def _value_brief(value: Any) -> str:
    if isinstance(value, str):
        # repr keeps a newline visible as \n; the cut happens before quoting so the quotes stay
        return repr(value if len(value) <= ARG_CHARS else value[:ARG_CHARS - 1] + "…")
    return short(json.dumps(value, ensure_ascii=False, default=str), ARG_CHARS)


def result_brief(result: ToolResult) -> str:
    """The one line a person sees for a tool's result."""
    if result.summary:
        return short(result.summary, LINE_CHARS)
    lines = [ln for ln in result.content.strip().splitlines() if ln.strip()]
    if not lines:
        return "(no output)"
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    return short(lines[0], LINE_CHARS - len(more)) + more


def tokens(n: int) -> str:
    """1234 → ``1.2k``; 2_500_000 → ``2.5M``."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return str(n)


def seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


def context_line(used: int, size: int | None) -> str:
    if not size:
        return f"context {tokens(used)}"
    return f"context {tokens(used)}/{tokens(size)} ({100 * used // max(1, size)}%)"


def usage_line(total: Usage) -> str:
    cached = f", {tokens(total.cached_tokens)} cached" if total.cached_tokens else ""
    return f"{tokens(total.prompt_tokens)} in / {tokens(total.completion_tokens)} out{cached}"


#: the longest reason shown in the line that says why a run stopped
REASON_CHARS = 300


def end_line(result: RunResult) -> str:
    """Why a run that did not finish stopped, in one line for the person (empty when it finished).

    The reason is the real cause ("the model made the same failing call 3 times: …", "the checks
    failed once: … (1 failing: tests/…)"); the status's generic words only stand in when there is none.
    """
    if result.ok:
        return ""
    what = {"budget_exceeded": "stopped: budget spent", "interrupted": "interrupted",
            "format_errors": "stopped: the model's tool calls kept failing",
            "checks_failed": "stopped: the checks failed", "error": "stopped: the model server failed"}
    head = what.get(result.status, f"stopped ({result.status})")
    reason = one_line(result.reason)
    if not reason or reason == head:
        return head
    if result.status == "interrupted" or reason.startswith(head):
        # "interrupted while the model was answering" says it all; no "interrupted: interrupted …"
        return reason
    if result.status == "budget_exceeded":
        return f"{head}: {reason}"
    return f"stopped: {reason}"


def one_line(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters (a reason, for the screen and for JSON)."""
    return short(text, limit) if text else ""


def progress_line(done: int, total: int, *, cached: int = 0) -> str:
    """``processing prompt 1,234/5,678 tokens (21%)``: how far the server is through a long prompt."""
    pct = f" ({100 * done // total}%)" if total else ""
    reused = f", {cached:,} reused" if cached else ""
    return f"processing prompt {done:,}/{total:,} tokens{pct}{reused}"


class PromptSpeed:
    """The server's prompt-processing speed, measured from its progress reports (tokens per second)."""

    def __init__(self) -> None:
        self.tokens_per_s: float | None = None

    def measure(self, done: int, cached: int, time_ms: float) -> None:
        read = done - cached
        if read >= 64 and time_ms >= 500:  # too little says nothing about a long prompt
            self.tokens_per_s = read / (time_ms / 1000)

    def estimate_s(self, tokens: int) -> float | None:
        """Seconds the server will take to read ``tokens`` new prompt tokens, when it was measured."""
        return tokens / self.tokens_per_s if self.tokens_per_s else None


class Progress:
    """What the agent is doing right now, with the time it started (for the spinner)."""

    def __init__(self) -> None:
        self.label = ""
        self.since = 0.0
        self.running: dict[str, tuple[str, float]] = {}  # call id -> (tool name, start)

    def set(self, label: str) -> None:
        self.label, self.since = label, time.monotonic()

    def relabel(self, label: str) -> None:
        """Say what is happening now without restarting the clock (prompt progress within one model call)."""
        if not self.label:
            self.since = time.monotonic()
        self.label = label

    def clear(self) -> None:
        self.label = ""

    def describe(self) -> str:
        if self.running:
            name, start = next(reversed(self.running.values()))
            more = f" (+{len(self.running) - 1} more)" if len(self.running) > 1 else ""
            return f"running {name}{more} {seconds(time.monotonic() - start)}"
        if self.label:
            return f"{self.label} {seconds(time.monotonic() - self.since)}"
        return ""


# --- -p: plain streams -----------------------------------------------------------------------------

class PlainScreen(AgentEvents):
    """Answer text to ``out`` as it streams; tool lines, notices and the spinner to ``err``.

    ``stream``: write the answer to ``out`` while it arrives (off for ``--quiet`` and JSON);
    ``progress``: tool lines and notices on ``err`` (off for ``--quiet``); ``spinner``: animate
    on ``err`` (only when it is a terminal).
    """

    def __init__(self, out: IO[str], err: IO[str], *, stream: bool = True, progress: bool = True,
                 spinner: bool = False, interval_s: float = 0.1) -> None:
        self.out, self.err = out, err
        self.stream, self.progress, self.spinner = stream, progress, spinner and progress
        self.interval_s = interval_s
        self._lock = threading.RLock()
        self._state = Progress()
        self._spin_shown = False
        self._line_open = False  # text written to out without its closing newline
        self._streamed = False  # this model call's text went to out already
        self._out_closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.speed = PromptSpeed()

    def write_out(self, text: str) -> None:
        """Write to ``out``; a reader that went away (``| head``) ends the writing, not the run."""
        if self._out_closed:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except (BrokenPipeError, ValueError):
            self._out_closed = True
            try:  # so the interpreter's own flush at exit does not complain either
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
                os.close(devnull)
            except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
                pass

    # spinner ------------------------------------------------------------------------------------

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(self.interval_s):
            with self._lock:
                what = self._state.describe()
                if what:
                    # one row at most: "\r" and erase-line cannot take back a line that wrapped
                    width = shutil.get_terminal_size((80, 24)).columns - 1
                    self.err.write(f"\r\x1b[2K{short(SPINNER[frame % len(SPINNER)] + ' ' + what, width)}")
                    self.err.flush()
                    self._spin_shown = True
                    frame += 1

    def _unspin(self) -> None:
        if self._spin_shown:
            self.err.write("\r\x1b[2K")
            self.err.flush()
            self._spin_shown = False

    def _busy(self, label: str) -> None:
        with self._lock:
            self._state.set(label)
            if self.spinner and self._thread is None:
                self._thread = threading.Thread(target=self._spin, name="spinner", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop the spinner and leave the terminal tidy."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        with self._lock:
            self._unspin()

    # events -------------------------------------------------------------------------------------

    def thinking(self, step: int) -> None:
        with self._lock:
            self._streamed = False
        self._busy("thinking" if step <= 1 else f"thinking (step {step})")

    def text(self, delta: str) -> None:
        with self._lock:
            self._state.clear()
            self._unspin()
            if self.stream:
                self.write_out(delta)
                self._line_open = not delta.endswith("\n")
                self._streamed = True

    def assistant_done(self, text: str, calls: tuple[ToolCall, ...]) -> None:
        with self._lock:
            self._state.clear()
            self._unspin()
            if self.stream and not self._streamed and text.strip():
                # a gateway that did not stream: show the text now
                self.write_out(text.strip())
                self._line_open = True
            if self._line_open:
                self.write_out("\n")
                self._line_open = False

    def prompt_progress(self, done: int, total: int, cached: int, time_ms: float) -> None:
        with self._lock:
            self.speed.measure(done, cached, time_ms)
            if not self._streamed:
                self._state.relabel(progress_line(done, total, cached=cached))

    def tool_start(self, call: ToolCall) -> None:
        with self._lock:
            self._state.running[call.id] = (call.name, time.monotonic())
            if self.progress:
                self._unspin()
                self.err.write(f"→ {call_brief(call)}\n")
                self.err.flush()
        self._busy("")

    def tool_end(self, call: ToolCall, result: ToolResult, duration_s: float) -> None:
        with self._lock:
            self._state.running.pop(call.id, None)
            if self.progress:
                self._unspin()
                mark = "✓" if result.ok else "✗"
                self.err.write(f"  {mark} {result_brief(result)} ({seconds(duration_s)})\n")
                self.err.flush()

    def notice(self, message: str) -> None:
        with self._lock:
            if self.progress:
                self._unspin()
                self.err.write(f"note: {message}\n")
                self.err.flush()

    def finish(self, result: RunResult, *, answer: bool) -> None:
        """After the run: the answer when it was not streamed (``answer``), why it stopped on err."""
        self.close()
        with self._lock:
            if answer and result.answer:
                self.write_out(result.answer.rstrip("\n") + "\n")
            elif self._line_open:
                self.write_out("\n")
            self._line_open = False
            if not result.ok:
                self.err.write(end_line(result) + "\n")
                self.err.flush()


# --- the chat: rich --------------------------------------------------------------------------------

class ChatScreen(AgentEvents):
    """Rich rendering for the interactive chat; :meth:`begin` and :meth:`end` bracket one turn.

    Lock order: rich's live region takes its own lock and then asks :meth:`view` for the picture
    (which takes ``_lock``), so nothing here prints while holding ``_lock``: state changes under
    the lock, printing after it is released.
    """

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.console = console
        self._lock = threading.RLock()
        self._state = Progress()
        self._buffer = ""
        self._live = Live(_LiveView(self), console=console, transient=True, refresh_per_second=10,
                          redirect_stdout=False, redirect_stderr=False)
        self.context_used = 0
        self.context_size: int | None = None
        self.run_usage = Usage()
        self.speed = PromptSpeed()
        self._spinner: Any = None

    # the live region ------------------------------------------------------------------------------

    def begin(self) -> None:
        """A turn starts: show the live region."""
        with self._lock:
            self._buffer = ""
            self.run_usage = Usage()
            self._state = Progress()
        self._live.start()

    def end(self) -> None:
        """The turn is over: remove the live region; text cut off mid-answer stays on screen."""
        from rich.text import Text

        self._live.stop()
        with self._lock:
            cut, self._buffer = self._buffer.rstrip(), ""
        if cut.strip():
            self.console.print(Text(cut + " …", style="dim"))

    def view(self) -> Any:
        from rich.console import Group
        from rich.spinner import Spinner
        from rich.text import Text

        with self._lock:
            buffer, what = self._buffer, self._state.describe()
        parts: list[Any] = []
        if buffer:
            # the streaming answer: only its tail fits under the fold; the full text is printed at the end.
            # Counted in screen rows, long lines wrapped: a live region taller than the terminal cannot
            # be erased, and what scrolled out of it would stay on the screen twice.
            size = self.console.size
            parts.append(Text(fold_tail(buffer, size.width, max(3, size.height - 4))))
        if what:
            # one spinner kept across renders: a new one each time would always show its first frame
            if self._spinner is None:
                self._spinner = Spinner("dots", Text(what, style="dim"))
            else:
                self._spinner.update(text=Text(what, style="dim"))
            parts.append(self._spinner)
        return Group(*parts)

    # events ---------------------------------------------------------------------------------------

    def thinking(self, step: int) -> None:
        with self._lock:
            self._state.set("thinking" if step <= 1 else f"thinking (step {step})")

    def prompt_progress(self, done: int, total: int, cached: int, time_ms: float) -> None:
        with self._lock:
            self.speed.measure(done, cached, time_ms)
            if not self._buffer:
                self._state.relabel(progress_line(done, total, cached=cached))

    def text(self, delta: str) -> None:
        with self._lock:
            self._state.clear()
            self._buffer += delta

    def assistant_done(self, text: str, calls: tuple[ToolCall, ...]) -> None:
        from rich.markdown import Markdown
        from rich.text import Text

        with self._lock:
            self._state.clear()
            self._buffer = ""
        shown = text.strip()
        if shown:
            self.console.print(Text(shown, style="italic") if calls else Markdown(shown))

    def tool_start(self, call: ToolCall) -> None:
        from rich.text import Text

        with self._lock:
            self._state.running[call.id] = (call.name, time.monotonic())
        self.console.print(Text("→ ", style="cyan") + Text(call_brief(call)))

    def tool_end(self, call: ToolCall, result: ToolResult, duration_s: float) -> None:
        from rich.text import Text

        with self._lock:
            self._state.running.pop(call.id, None)
        mark = Text("  ✓ ", style="green") if result.ok else Text("  ✗ ", style="red")
        self.console.print(mark + Text(result_brief(result)) + Text(f" ({seconds(duration_s)})", style="dim"))

    def notice(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text(f"note: {message}", style="yellow"))

    def usage(self, total: Usage, context_used: int, context_size: int | None) -> None:
        with self._lock:
            self.run_usage = total
            self.context_used, self.context_size = context_used, context_size


def fold_tail(text: str, width: int, rows: int) -> str:
    """The end of ``text`` that fills at most ``rows`` rows of a ``width``-column screen (long lines wrap)."""
    from rich.cells import cell_len

    width = max(1, width)
    kept: list[str] = []
    used = 0
    for line in reversed(text.splitlines() or [""]):
        need = max(1, -(-cell_len(line) // width))
        if used + need > rows:
            room = rows - used
            if room > 0:  # the visible end of a line too long for what is left
                kept.append(_last_cells(line, room * width))
            break
        kept.append(line)
        used += need
    return "\n".join(reversed(kept))


def _last_cells(line: str, cells: int) -> str:
    from rich.cells import cell_len

    while cell_len(line) > cells:
        line = line[max(1, (cell_len(line) - cells) // 2):] if cell_len(line) > 2 * cells else line[1:]
    return line


class _LiveView:
    """Renders the chat screen's current state each time rich refreshes the live region."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen

    def __rich__(self) -> Any:
        return self.screen.view()


def status_fields(model: str, used: int, size: int | None, session: Usage,
                  extra: Mapping[str, str] | None = None) -> str:
    """The status line printed after each chat turn."""
    parts = [model, context_line(used, size), "session " + usage_line(session)]
    parts += [f"{k} {v}" for k, v in (extra or {}).items()]
    return " · ".join(p for p in parts if p)
