"""The judge: when the model says it is done and files changed, the workspace's checks must pass.

The check command is ``AGENT_CHECK_COMMAND``, or ``python -m pytest -q -x`` when the workspace has a
``tests/`` folder and the sandbox's Python can import pytest; with neither, the judge accepts
silently. It runs in the sandbox (``core.sandbox``) with a timeout, stdout and stderr together, and
stops at once when the person presses Ctrl-C. Bytecode older than its source is removed first
(:func:`purge_stale_bytecode`). A failure (non-zero exit, timeout) goes back to the
model with the output clipped to its head and tail, up to ``AGENT_JUDGE_ROUNDS`` times in one run;
the next failure ends the run with status ``checks_failed`` and the output's last lines.

"Files changed in this run" is read from the run's tool calls: a successful ``write_file`` or
``edit_file`` is a change. Any other tool that may write (``shell``, ``pyexe``, a skill) makes the
judge look for files in the workspace modified or created since the run started (mtime or ctime;
caches and ``.git`` skipped), so a run that only read, listed or ran the tests is not judged.
Deleting a file and nothing else goes unseen.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from core import sandbox
from core.errors import Interrupted, RunEnded, SandboxError
from flow.events import ToolCallRecord
from flow.loop import Finished
from tool.registry import clip_text

#: tools whose successful call is a change to the workspace
WRITE_TOOLS = frozenset({"write_file", "edit_file"})
#: tools that never change files (anything else that ran makes the judge look at the workspace)
READ_TOOLS = frozenset({"read_file", "list_files", "search_files", "plan", "memory", "fetch", "data_view"})
#: folders of caches and tools, never the work itself
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".agent", "__pycache__", ".pytest_cache", ".mypy_cache",
                       ".ruff_cache", ".tox", ".nox", ".venv", "venv", "node_modules", ".hypothesis", ".cache"})
#: entries looked at before giving up and assuming something changed
SCAN_LIMIT = 50_000
#: file times come from a coarser clock than time.time(): a write just after the start may look earlier
CLOCK_SLACK_S = 0.05
PYTEST_COMMAND = "python -m pytest -q -x"
PYTEST_NO_TESTS = 5  # pytest's exit code when it collected nothing
#: a test suite may well run longer than one tool call
MIN_TIMEOUT_S = 300.0
OUTPUT_TOKENS = 1000
TAIL_LINES = 20


class ChecksFailed(RunEnded):
    """The check command kept failing after every round the judge allows."""

    status = "checks_failed"


@dataclass(frozen=True)
class CheckResult:
    """One run of the check command."""

    command: str
    passed: bool
    exit_code: int | None  # None: killed (timeout, Ctrl-C)
    output: str  # stdout and stderr together, head and tail kept
    duration_s: float
    timed_out: bool = False
    note: str = ""  # "no tests collected"

    def line(self) -> str:
        """One line for the person: ``checks: python -m pytest -q -x passed in 2.1 s``."""
        if self.passed:
            how = "passed" + (f" ({self.note})" if self.note else "")
        elif self.timed_out:
            how = "timed out"
        elif self.exit_code is None:
            how = "was stopped"
        else:
            how = f"failed (exit code {self.exit_code})"
        return f"checks: {self.command} {how} in {self.duration_s:.1f} s"

    def tail(self, lines: int = TAIL_LINES) -> str:
        kept = self.output.rstrip().splitlines()[-lines:]
        return "\n".join(kept)


def detect_check_command(settings: Any) -> str | None:
    """``AGENT_CHECK_COMMAND``, else pytest when ``tests/`` exists and pytest can be imported."""
    configured = (settings.check_command or "").strip()
    if configured:
        return configured
    if (Path(settings.workspace_root) / "tests").is_dir() and pytest_available():
        return PYTEST_COMMAND
    return None


def pytest_available() -> bool:
    """Whether the sandbox's ``python`` (this interpreter, first on the sandbox's PATH) has pytest."""
    return importlib.util.find_spec("pytest") is not None


def changed_since(root: Path, since: float, *, limit: int = SCAN_LIMIT) -> bool:
    """Whether a file under ``root`` (caches skipped) was written, created or moved after ``since``."""
    threshold_ns = int((since - CLOCK_SLACK_S) * 1e9)
    stack = [str(root)]
    seen = 0
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                seen += 1
                if seen > limit:
                    return True  # too big to look through cheaply: assume it changed
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name not in SKIP_DIRS:
                            stack.append(entry.path)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if max(st.st_mtime_ns, st.st_ctime_ns) >= threshold_ns:
                    return True
    return False


def purge_stale_bytecode(root: Path, *, limit: int = SCAN_LIMIT) -> int:
    """Remove the workspace's ``.pyc`` files written before their source last changed; returns how many.

    Python trusts a ``.pyc`` whose recorded source mtime (whole seconds) and size match, so a fix of
    the same size written within the second after the model's own test run would run the old code
    in the check. A removed ``.pyc`` is only a cache: Python writes it again.
    """
    removed = seen = 0
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                dirs = [e for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for entry in dirs:
            seen += 1
            if seen > limit:
                return removed
            if entry.name == "__pycache__":
                removed += _purge_cache_dir(folder, entry.path)
            elif entry.name not in SKIP_DIRS:
                stack.append(entry.path)
    return removed


def _purge_cache_dir(source_dir: str, cache_dir: str) -> int:
    removed = 0
    try:
        with os.scandir(cache_dir) as entries:
            compiled = [e for e in entries if e.name.endswith(".pyc") and e.is_file(follow_symlinks=False)]
    except OSError:
        return 0
    for entry in compiled:
        source = os.path.join(source_dir, entry.name.split(".", 1)[0] + ".py")
        try:
            if os.lstat(source).st_mtime_ns > entry.stat(follow_symlinks=False).st_mtime_ns:
                os.unlink(entry.path)
                removed += 1
        except OSError:  # no source (a deleted module) or already gone: Python ignores it either way
            continue
    return removed


def files_changed(calls: Iterable[ToolCallRecord], root: Path, since: float) -> bool:
    """Whether this run's tool calls changed files (see the module's docstring for how)."""
    look = False
    for call in calls:
        if call.name in WRITE_TOOLS:
            if call.ok:
                return True
        elif call.name not in READ_TOOLS:
            look = True
    if not look:
        return False
    if since <= 0:  # the run's start is unknown: a tool that may write counts as a change
        return True
    return changed_since(root, since)


class Judge:
    """The agent's verifier: ``judge(finished)`` → ``None`` (accept) or feedback for the model.

    Raises :class:`ChecksFailed` after ``rounds`` failures have gone back to the model in one run.
    ``last`` is the latest :class:`CheckResult` (for the CLI); every check is also told to ``notice``.
    """

    def __init__(self, settings: Any, *, notice: Callable[[str], None] | None = None,
                 policy: sandbox.SandboxPolicy | None = None, timeout_s: float | None = None,
                 output_tokens: int | None = None) -> None:
        self.settings = settings
        self.notice = notice
        self.rounds = settings.judge_rounds
        self.timeout_s = timeout_s or max(MIN_TIMEOUT_S, float(settings.tool_timeout_s))
        self.policy = policy or sandbox.SandboxPolicy.from_settings(settings, timeout_s=self.timeout_s)
        # the feedback is a user message, which the context budget does not clip: keep it modest
        self.output_tokens = output_tokens or min(OUTPUT_TOKENS, int(settings.tool_result_tokens))
        self.last: CheckResult | None = None
        self._run: tuple[str, float] | None = None
        self._failures = 0

    def command(self) -> str | None:
        """The check command that applies now, or ``None``."""
        return detect_check_command(self.settings)

    def __call__(self, finished: Finished) -> str | None:
        command = self.command()
        if command is None:
            return None
        if not files_changed(finished.tool_calls, self.policy.workspace, finished.started_at):
            return None
        run = (finished.session_id, finished.started_at)
        if run != self._run:
            self._run, self._failures = run, 0
        self._tell(f"checks: running {command}")
        try:
            result = self.check(command, cancel=finished.cancel)
        except SandboxError as exc:
            self._tell(f"checks: not run: {exc}")
            return None
        self.last = result
        self._tell(result.line())
        if finished.cancel.is_set():
            raise Interrupted("interrupted by the person while the checks ran")
        if result.passed:
            return None
        self._failures += 1
        if self._failures > self.rounds:
            times = "once" if self._failures == 1 else f"{self._failures} times"
            raise ChecksFailed(f"the checks failed {times}: {self._what(result)}; the last output:\n{result.tail()}")
        left = self.rounds - self._failures
        more = (f"{left} more time{'s' if left != 1 else ''}" if left else "no more times") + " before the run ends"
        output = clip_text(result.output.rstrip() or "(no output)", self.output_tokens,
                           hint=f"run `{command}` yourself with the shell tool")
        return (f"The checks failed, so the task is not done yet: {self._what(result)}. "
                f"Fix the cause, then answer again; the checks run each time you answer "
                f"(they may fail {more}).\n\n{output}")

    def check(self, command: str, *, cancel: threading.Event | None = None) -> CheckResult:
        """Run ``command`` in the sandbox (stdout and stderr together) until it exits, times out or ``cancel``."""
        start = time.monotonic()
        # one stream keeps pytest's report and any stderr in the order they were written
        purge_stale_bytecode(self.policy.workspace)
        # the sandbox kills everything the command started when it ends, times out or is cancelled
        ran = sandbox.run(f"exec 2>&1\n{command}", self.policy, timeout_s=self.timeout_s, cancel=cancel)
        timed_out, code = ran.timed_out, ran.exit_code  # no exit code when it was killed
        duration = time.monotonic() - start
        note = ""
        passed = code == 0
        if command == PYTEST_COMMAND and code == PYTEST_NO_TESTS:
            passed, note = True, "no tests collected"
        output = ran.stdout + ran.stderr  # stderr holds only what bwrap itself said
        if timed_out:
            output += f"\n[killed: the checks did not finish within {self.timeout_s:g} s]"
        return CheckResult(command, passed, code, output, duration, timed_out, note)

    def _what(self, result: CheckResult) -> str:
        if result.timed_out:
            return f"`{result.command}` did not finish within {self.timeout_s:g} s"
        return f"`{result.command}` exited with code {result.exit_code}"

    def _tell(self, line: str) -> None:
        if self.notice is not None:
            self.notice(line)

