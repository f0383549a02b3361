"""Running one agent turn so that Ctrl-C interrupts it cleanly, and what each ending exits with.

The run happens in a worker thread; the main thread waits for it and is the one Python delivers
Ctrl-C to. The first Ctrl-C sets the run's cancel event, so the loop ends the turn with status
``interrupted`` and leaves the session consistent (every tool call answered). A second Ctrl-C
means "leave now": :class:`Leave` is raised once the worker has had a moment to settle.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

from flow.events import RunResult

EXIT_OK = 0
EXIT_FAILED = 1  # the run ended without success: a budget, malformed calls, failing checks, a server error
EXIT_USAGE = 2  # bad flags or settings, no server, unknown session: nothing ran
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells do)

STATUS_EXIT = {
    "done": EXIT_OK,
    "budget_exceeded": EXIT_FAILED,
    "format_errors": EXIT_FAILED,
    "checks_failed": EXIT_FAILED,
    "error": EXIT_FAILED,
    "interrupted": EXIT_INTERRUPTED,
}

#: how long a second Ctrl-C waits for the run to write its last messages before leaving anyway
SETTLE_S = 3.0


class Leave(Exception):
    """The person pressed Ctrl-C twice: leave the program."""


def exit_code(status: str) -> int:
    return STATUS_EXIT.get(status, EXIT_FAILED)


def run_turn(agent: Any, task: str, *, session_id: str | None,
             on_interrupt: Callable[[], None] = lambda: None, poll_s: float = 0.1) -> RunResult:
    """``agent.run(task)`` in a worker thread; Ctrl-C cancels it, a second Ctrl-C raises :class:`Leave`.

    Exceptions of the run (a :class:`core.errors.FatalError`) are raised here, in the caller's thread.
    """
    cancel = threading.Event()
    finished = threading.Event()
    outcome: dict[str, Any] = {}
    watch = getattr(agent, "events", None)
    if hasattr(watch, "judge") and hasattr(watch, "cancel"):
        watch.cancel = cancel  # the judge's checks before the change stop on this turn's Ctrl-C too

    def work() -> None:
        try:
            outcome["result"] = agent.run(task, session_id=session_id, cancel=cancel)
        except BaseException as exc:  # handed to the main thread, which decides what the person sees
            outcome["error"] = exc
        finally:
            finished.set()

    # Ctrl-C is counted by a signal handler while the turn runs, so no KeyboardInterrupt lands in
    # the middle of the screen's or the store's code (a lock left held there hung the exit)
    presses = [0]

    def on_sigint(signum: int, frame: Any) -> None:
        presses[0] += 1

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    # waiting on an Event, not Thread.join: a join interrupted by Ctrl-C can leave the thread
    # marked finished while it still runs (CPython before 3.12)
    threading.Thread(target=work, name="agent-turn", daemon=True).start()
    try:
        while not finished.is_set():
            try:
                finished.wait(poll_s)
            except KeyboardInterrupt:  # not the main thread: Python's own handler raised
                presses[0] += 1
            if presses[0] >= 2:
                finished.wait(SETTLE_S)
                raise Leave()
            if presses[0] == 1 and not cancel.is_set():
                cancel.set()
                on_interrupt()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


# --- moving a session to another model provider --------------------------------------------------

#: what the agent is told when a task that outgrew the local context goes on with Gemini
CONTINUE_TASK = ("Continue the task you were working on where you stopped: the conversation has moved to a "
                 "model with a longer context.")
#: said every time the person is asked, or told, that a session goes to Gemini
SENT_TO_GOOGLE = "the session's content (messages, files read, tool output) will be sent to Google"


def outgrew_context(result: RunResult) -> bool:
    """The run stopped because the task no longer fits the model's context, even after compaction."""
    return result.status == "budget_exceeded" and result.budget == "context"


def switch_provider(agent: Any, settings: Any, provider: str) -> None:
    """Continue ``agent`` (same session store, same tools) on ``provider``: ``local`` or ``gemini``.

    Raises :class:`core.errors.FatalError` (no key, no server) before anything changes. The old
    gateway's connections are closed.
    """
    from gate.factory import make_gateway

    gateway = make_gateway(settings, provider)  # type: ignore[arg-type]
    if provider == "local":
        from boot.cli import check_server

        check_server(settings)
    old = agent.gateway
    agent.use_gateway(gateway)
    close = getattr(old, "close", None)
    if callable(close):
        close()


def close_agent(agent: Any) -> None:
    """Free everything the agent holds: its tools' processes and stores, the sessions, the gateway."""
    try:
        agent.close()
    finally:
        close = getattr(agent.gateway, "close", None)
        if callable(close):
            close()


def combined(first: RunResult, then: RunResult) -> RunResult:
    """One result for a run that went on in a second run of the same session (the usage of both)."""
    return RunResult(then.status, then.answer, then.session_id, first.steps + then.steps,
                     [*first.tool_calls, *then.tool_calls], first.usage + then.usage, then.reason,
                     first.elapsed_s + then.elapsed_s, then.budget)
