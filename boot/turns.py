"""Running one agent turn so that Ctrl-C interrupts it cleanly, and what each ending exits with.

The run happens in a worker thread; the main thread waits for it and is the one Python delivers
Ctrl-C to. The first Ctrl-C sets the run's cancel event, so the loop ends the turn with status
``interrupted`` and leaves the session consistent (every tool call answered). A second Ctrl-C
means "leave now": :class:`Leave` is raised once the worker has had a moment to settle.
"""

from __future__ import annotations

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

    def work() -> None:
        try:
            outcome["result"] = agent.run(task, session_id=session_id, cancel=cancel)
        except BaseException as exc:  # handed to the main thread, which decides what the person sees
            outcome["error"] = exc
        finally:
            finished.set()

    # waiting on an Event, not Thread.join: a join interrupted by Ctrl-C can leave the thread
    # marked finished while it still runs (CPython before 3.12)
    threading.Thread(target=work, name="agent-turn", daemon=True).start()
    while not finished.is_set():
        try:
            finished.wait(poll_s)
        except KeyboardInterrupt:
            if cancel.is_set():
                finished.wait(SETTLE_S)
                raise Leave() from None
            cancel.set()
            on_interrupt()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
