"""The judge: when the model says it is done and files changed, the workspace's checks must pass.

The check command is ``AGENT_CHECK_COMMAND``, or ``python -m pytest -q -x`` when the workspace has a
``tests/`` folder and the sandbox's Python can import pytest; with neither, the judge accepts
silently. It runs in the sandbox (``core.sandbox``) with a timeout, stdout and stderr together, and
stops at once when the person presses Ctrl-C. Bytecode older than its source is removed first
(:func:`purge_stale_bytecode`). A failure (non-zero exit, timeout) goes back to the
model with the output clipped to its head and tail, up to ``AGENT_JUDGE_ROUNDS`` times in one run;
the next failure ends the run with status ``checks_failed`` and a one-line reason (the output's
last lines stay in :attr:`Judge.last`). When the sandbox cannot start, the checks cannot run and
the run ends ``checks_failed`` saying why: an answer is never accepted unchecked.

Only what the task broke is blamed, unless the task is about making tests pass
(:func:`asks_for_passing_tests`). Before the run's first tool that may write, the judge runs the
checks once (:meth:`Judge.before_change`, called by :class:`JudgeWatch`) and records which tests
already fail (pytest's ``FAILED``/``ERROR`` summary lines). The check after the task leaves those
out (``--deselect``, ``--ignore`` with the default pytest command) or, for another command,
accepts a failure whose failing tests, or whole output, are the same as before; either way the
person is told which were failing already.

"Files changed in this run" is read from the run's tool calls: a successful ``write_file`` or
``edit_file`` is a change. Any other tool that may write (``shell``, ``pyexe``, a skill) makes the
judge look for files in the workspace modified or created since the run started (mtime or ctime;
caches, ``.git`` and the sandbox's own files, :data:`core.paths.PROTECTED`, skipped), so a run that
only read, listed or ran the tests is not judged. Deleting a file and nothing else goes unseen.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from core import sandbox
from core.errors import Interrupted, RunEnded, SandboxError
from core.messages import ToolCall, Usage
from core.paths import PROTECTED
from core.tools import ToolResult
from flow.events import AgentEvents, ToolCallRecord
from flow.loop import Finished
from tool.registry import clip_text

#: tools whose successful call is a change to the workspace
WRITE_TOOLS = frozenset({"write_file", "edit_file"})
#: tools that never change files (anything else that ran makes the judge look at the workspace)
READ_TOOLS = frozenset({"read_file", "list_files", "search_files", "plan", "memory", "fetch", "data_view"})
#: folders of caches and tools, never the work itself
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".agent", "__pycache__", ".pytest_cache", ".mypy_cache",
                       ".ruff_cache", ".tox", ".nox", ".venv", "venv", "node_modules", ".hypothesis", ".cache"})
#: files the agent and its sandbox make for themselves (the ``.env`` placeholder, the skills' lock)
SKIP_FILES = frozenset(PROTECTED) | {".manifest.lock"}
#: entries looked at before giving up and assuming something changed
SCAN_LIMIT = 50_000
#: file times come from a coarser clock than time.time(): a write just after the start may look earlier
CLOCK_SLACK_S = 0.05
PYTEST_COMMAND = "python -m pytest -q -x"
#: the run before the task: every test (no -x), past a module that fails to import
PYTEST_BASELINE = "python -m pytest -q --continue-on-collection-errors"
#: pytest's short summary: ``FAILED tests/test_a.py::test_b - AssertionError`` / ``ERROR tests/test_c.py``
_SUMMARY = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.MULTILINE)
#: what differs between two runs of the same failing checks: durations, addresses, temporary names
_NOISE = re.compile(r"\d+(?:\.\d+)?s\b|0x[0-9a-f]+|\d+(?:\.\d+)? seconds|/tmp/\S+")
#: failing tests named in a line before "…and N more"
NAMED = 5
PYTEST_NO_TESTS = 5  # pytest's exit code when it collected nothing
#: the shell's exit codes for a command it could not find or run: the checks did not run at all
NOT_RUN_CODES = (126, 127)
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
    note: str = ""  # "no tests collected", "2 failing before the task left out"
    already_failing: tuple[str, ...] = ()  # failing before the task too: not blamed on it

    def line(self) -> str:
        """One line for the person: ``checks: python -m pytest -q -x passed in 2.1 s``."""
        if self.passed and self.exit_code not in (0, PYTEST_NO_TESTS):
            how = f"failed only as before the task, so it is not counted ({self.note})"
        elif self.passed:
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
                    if entry.name in SKIP_FILES:
                        continue  # the sandbox's placeholder comes and goes with every command
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


def failing_tests(output: str) -> tuple[str, ...]:
    """The test ids pytest's short summary names as failed or in error, in order, once each."""
    return tuple(dict.fromkeys(m.group(1).strip() for m in _SUMMARY.finditer(output)))


def _same_failure(before: str, after: str) -> bool:
    """Whether two outputs of a failing command say the same thing (timings and addresses aside)."""
    def norm(text: str) -> str:
        return _NOISE.sub("#", "\n".join(text.strip().splitlines()[-TAIL_LINES:]))
    return bool(before.strip()) and norm(before) == norm(after)


_TESTS = re.compile(r"\b(?:tests?|pytest|test suite)\b", re.IGNORECASE)
_MAKE_PASS = re.compile(r"\b(?:fail\w*|fix\w*|pass\w*|broken|break\w*|red|green|repair\w*)\b", re.IGNORECASE)


def asks_for_passing_tests(task: str, failing: Iterable[str]) -> bool:
    """Whether the task is about making tests pass (then the ones failing before it count too).

    It is when it names a failing test (its file or function) or speaks of tests together with
    failing, fixing or passing ("The tests in tests/ are failing. Fix the code…"). "Add a test for
    slugify" is not: a test that was red before stays the person's business.
    """
    for test in failing:
        path, _, name = test.partition("::")
        words = {path, path.rsplit("/", 1)[-1], name.split("[", 1)[0].rsplit("::", 1)[-1]} - {""}
        if any(w in task for w in words):
            return True
    return bool(_TESTS.search(task) and _MAKE_PASS.search(task))


def _last_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"


def named(ids: Iterable[str], limit: int = NAMED) -> str:
    """``a, b, c and 4 more``."""
    ids = list(ids)
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


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

    Raises :class:`ChecksFailed` after ``rounds`` failures have gone back to the model in one run,
    or at once when the checks cannot run (the sandbox does not start). ``last`` is the latest
    :class:`CheckResult` (for the CLI) and ``baseline`` the run's check before its first change;
    every check is also told to ``notice``.
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
        self.baseline: CheckResult | None = None
        self._baseline_taken = False  # for the current run (even when it could not run)
        #: (wall-clock time, result): the checks' result for the workspace as it was at that time, so a
        #: run that starts with nothing changed since does not run the whole suite again
        self._known: tuple[float, CheckResult] | None = None
        self._run: tuple[str, float] | None = None
        self._failures = 0

    def command(self) -> str | None:
        """The check command that applies now, or ``None``."""
        return detect_check_command(self.settings)

    # --- before the task -------------------------------------------------------------------------

    def run_started(self) -> None:
        """A new run begins: what failed before the last one says nothing about this one."""
        self.baseline, self._baseline_taken = None, False

    def before_change(self, cancel: threading.Event | None = None) -> CheckResult | None:
        """Run the checks once per run, before its first tool that may write: what already fails."""
        if self._baseline_taken:
            return self.baseline
        self._baseline_taken = True
        command = self.command()
        if command is None:
            return None
        full = PYTEST_BASELINE if command == PYTEST_COMMAND else command
        known = self._known
        if known is not None and known[1].command == full and not changed_since(self.policy.workspace, known[0]):
            self.baseline = known[1]
            self._tell(f"checks before the change: as after the last check ({self._summary(known[1])})")
            return known[1]
        started = time.time()
        try:
            result = self.check(full, cancel=cancel)
        except SandboxError as exc:
            self._tell(f"checks before the change: not run: {exc}")
            return None
        if result.timed_out or result.exit_code is None or result.exit_code in NOT_RUN_CODES:
            how = ("timed out" if result.timed_out else "was stopped" if result.exit_code is None
                   else f"could not run: {_last_line(result.output)}")
            self._tell(f"checks before the change: {full} {how}")
            return None
        self.baseline = result
        self._known = (started, result)
        if result.passed:
            self._tell(f"checks before the change: {full} passed in {result.duration_s:.1f} s")
        else:
            self._tell(f"checks before the change: {self._summary(result)}")
        return result

    @staticmethod
    def _summary(result: CheckResult) -> str:
        if result.passed:
            return "all passed"
        ids = failing_tests(result.output)
        return f"{len(ids)} already failing: {named(ids)}" if ids else f"already failing (exit code {result.exit_code})"

    def watch(self, events: AgentEvents | None) -> "JudgeWatch":
        """``events`` with this judge listening: it notes each run's start and checks before its first write."""
        return JudgeWatch(self, events or AgentEvents())

    # --- after the task ---------------------------------------------------------------------------

    def __call__(self, finished: Finished) -> str | None:
        command = self.command()
        if command is None:
            return None
        if not files_changed(finished.tool_calls, self.policy.workspace, finished.started_at):
            return None
        run = (finished.session_id, finished.started_at)
        if run != self._run:
            self._run, self._failures = run, 0
        base = self.baseline
        if base is not None and not base.passed and asks_for_passing_tests(finished.task, failing_tests(base.output)):
            self.baseline = None  # every failure counts, the old ones included
            self._tell("checks: the task is about making tests pass, so the ones failing before it count too")
        self._tell(f"checks: running {command}")
        started = time.time()
        try:
            result = self.check_against_baseline(command, cancel=finished.cancel)
            if result.exit_code in NOT_RUN_CODES:  # not a failure of the work: the check itself is missing
                raise SandboxError(f"`{result.command}` exited with code {result.exit_code}: {_last_line(result.output)}")
        except SandboxError as exc:
            # fail closed: an answer whose checks could not run is not accepted
            why = " ".join(str(exc).split())
            self._tell(f"checks: could not run: {why}")
            raise ChecksFailed(f"the checks could not run, so the answer was not accepted: {why}") from None
        self.last = result
        self._tell(result.line())
        if finished.cancel.is_set():
            raise Interrupted("interrupted by the person while the checks ran")
        if result.passed:
            if not result.already_failing and not result.note:
                # every test ran and passed: that is what the next run starts from, unless files change
                full = PYTEST_BASELINE if command == PYTEST_COMMAND else command
                self._known = (started, CheckResult(full, True, 0, result.output, result.duration_s))
            return None
        self._failures += 1
        if self._failures > self.rounds:
            times = "once" if self._failures == 1 else f"{self._failures} times"
            raise ChecksFailed(f"the checks failed {times}: {self._what(result)}")
        left = self.rounds - self._failures
        more = (f"{left} more time{'s' if left != 1 else ''}" if left else "no more times") + " before the run ends"
        output = clip_text(result.output.rstrip() or "(no output)", self.output_tokens,
                           hint=f"run `{command}` yourself with the shell tool")
        before = (f" These were failing before your change and are not yours to fix (they are left out): "
                  f"{named(result.already_failing)}." if result.already_failing else "")
        return (f"The checks failed, so the task is not done yet: {self._what(result)}. "
                f"Fix the cause, then answer again; the checks run each time you answer "
                f"(they may fail {more}).{before}\n\n{output}")

    def check_against_baseline(self, command: str, *, cancel: threading.Event | None = None) -> CheckResult:
        """Run ``command``; failures that were there before the task (:attr:`baseline`) do not fail it."""
        base = self.baseline
        before = failing_tests(base.output) if base is not None and not base.passed else ()
        if base is None or base.passed:
            return self.check(command, cancel=cancel)
        if command == PYTEST_COMMAND and before:
            # leave the old failures out of the run, so the model reads only what it broke
            skip = " ".join(("--ignore=" if "::" not in t else "--deselect ") + shlex.quote(t) for t in before)
            result = self.check(f"{command} {skip}", cancel=cancel)
            note = f"{len(before)} failing before the task left out"
            if result.note:
                note = f"{result.note}; {note}"
            return replace(result, command=command, note=note, already_failing=before)
        result = self.check(command, cancel=cancel)
        if result.passed or result.timed_out or result.exit_code is None:
            return result
        after = failing_tests(result.output)
        if (before and after and set(after) <= set(before)) or (not after and _same_failure(base.output, result.output)):
            note = (f"{len(after)} failing before the task, none new" if after
                    else "it failed the same way before the task")
            return replace(result, passed=True, note=note, already_failing=after or before)
        return replace(result, already_failing=tuple(t for t in before if t in after))

    def check(self, command: str, *, cancel: threading.Event | None = None) -> CheckResult:
        """Run ``command`` in the sandbox (stdout and stderr together) until it exits, times out or ``cancel``."""
        start = time.monotonic()
        # one stream keeps pytest's report and any stderr in the order they were written
        purge_stale_bytecode(self.policy.workspace)
        # the sandbox kills everything the command started when it ends, times out or is cancelled
        ran = sandbox.run(f"exec 2>&1\n{command}", self.policy, timeout_s=self.timeout_s, cancel=cancel)
        timed_out, code = ran.timed_out, ran.exit_code  # no exit code when it was killed
        said = ran.stderr.strip()  # the command's stderr went to stdout: this is bwrap's own
        if code and not ran.stdout.strip() and said.startswith("bwrap:"):
            raise SandboxError(f"the sandbox did not start: {said.splitlines()[0][:300]}")
        duration = time.monotonic() - start
        note = ""
        passed = code == 0
        if command.startswith("python -m pytest ") and code == PYTEST_NO_TESTS:
            passed, note = True, "no tests collected"
        output = ran.stdout + ran.stderr  # stderr holds only what bwrap itself said
        if timed_out:
            output += f"\n[killed: the checks did not finish within {self.timeout_s:g} s]"
        return CheckResult(command, passed, code, output, duration, timed_out, note)

    def _what(self, result: CheckResult) -> str:
        if result.timed_out:
            return f"`{result.command}` did not finish within {self.timeout_s:g} s"
        what = f"`{result.command}` exited with code {result.exit_code}"
        new = [t for t in failing_tests(result.output) if t not in result.already_failing]
        if new:
            what += f" ({len(new)} failing: {named(new)})"
        if result.already_failing:
            what += f"; failing before the task too, not counted: {named(result.already_failing)}"
        return what

    def _tell(self, line: str) -> None:
        if self.notice is not None:
            self.notice(line)


class JudgeWatch(AgentEvents):
    """Passes every event on to ``inner``; tells the judge when a run starts and before a tool that may write.

    A run's first model call (step 1) starts it; before the first call of a tool outside
    :data:`READ_TOOLS` runs, the judge records what already fails (:meth:`Judge.before_change`).
    """

    def __init__(self, judge: Judge, inner: AgentEvents) -> None:
        self.judge = judge
        self.inner = inner
        #: the current run's cancel event, when the caller shares it (``boot.turns.run_turn`` does): Ctrl-C
        #: stops the checks before the change at once instead of after them
        self.cancel: threading.Event | None = None

    def __getattr__(self, name: str) -> Any:  # what the screen has beyond the listener (close, finish…)
        return getattr(self.inner, name)

    def thinking(self, step: int) -> None:
        if step <= 1:
            self.judge.run_started()
        self.inner.thinking(step)

    def text(self, delta: str) -> None:
        self.inner.text(delta)

    def assistant_done(self, text: str, calls: tuple[ToolCall, ...]) -> None:
        self.inner.assistant_done(text, calls)

    def tool_start(self, call: ToolCall) -> None:
        if call.name not in READ_TOOLS and not call.error:
            self.judge.before_change(self.cancel)
        self.inner.tool_start(call)

    def tool_end(self, call: ToolCall, result: ToolResult, duration_s: float) -> None:
        self.inner.tool_end(call, result, duration_s)

    def notice(self, message: str) -> None:
        self.inner.notice(message)

    def usage(self, total: Usage, context_used: int, context_size: int | None) -> None:
        self.inner.usage(total, context_used, context_size)

    def prompt_progress(self, done: int, total: int, cached: int, time_ms: float) -> None:
        self.inner.prompt_progress(done, total, cached, time_ms)
