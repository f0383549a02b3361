"""Ctrl-C stops the running tool, not only the turn: the real registry hands its cancel event to
``shell``, ``pyexe`` and skills, whose sandboxed processes stop within about a second; the next
call works. Checked on the host: no process of the sandbox is left.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from boot.settings import Settings
from core import sandbox
from core.messages import ToolCall
from core.tools import Tool, ToolResult, object_schema
from flow.loop import Agent
from gate.scripted import ScriptedGateway
from sandbox_helpers import processes_with, processes_working_in, require_bwrap, settings_for
from skills_helpers import Setup, skill_source, write
from store.sessions import SessionStore
from tool.pyexe import INTERRUPT_GRACE_S, PythonSession
from tool.registry import Outcome, ToolRegistry, takes_cancel
from tool.shell import shell_tool

#: how long after Ctrl-C a call may take to come back (the sandbox polls every 0.1 s; bwrap's
#: teardown and a loaded shared machine take the rest)
STOP_WITHIN_S = 1.0


def _sleep_marker() -> str:
    return f"{600 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"  # a unique sleep length


def wait_gone(pids: Any, deadline_s: float = 2.0) -> list[int]:
    """Poll until ``pids()`` is empty; return what is still there at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        left = pids()
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.02)


def interrupt_after(registry: ToolRegistry, call: ToolCall, delay_s: float = 0.3,
                    ready: Any = None) -> tuple[Outcome, float]:
    """Execute ``call`` with a cancel event set from another thread; (outcome, seconds from set to return).

    With ``ready`` (a callable), the event is set once it returns true, then ``delay_s`` later.
    """
    cancel = threading.Event()
    set_at: list[float] = []

    def press_ctrl_c() -> None:
        end = time.monotonic() + 20
        while ready is not None and not ready() and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(delay_s)
        set_at.append(time.monotonic())
        cancel.set()

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    outcome = registry.execute(call, cancel=cancel)
    returned = time.monotonic()
    presser.join(30)
    assert set_at, "the call returned before Ctrl-C was pressed"
    return outcome, returned - set_at[0]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    require_bwrap()
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def code_tools(ws: Path):
    settings = settings_for(ws)
    policy = sandbox.SandboxPolicy.from_settings(settings, timeout_s=60.0)
    session = PythonSession(settings, policy=policy)
    registry = ToolRegistry(default_timeout_s=60.0)
    registry.register(shell_tool(settings, policy=policy))
    registry.register(session.tool())
    yield registry, session
    session.close()


# --- the contract ---------------------------------------------------------------------------------


def test_only_a_callable_with_a_cancel_keyword_gets_the_event() -> None:
    schema = object_schema({"x": {"type": "string"}})

    def with_cancel(x: str = "", *, cancel: threading.Event | None = None) -> str:
        return x

    def without(x: str = "") -> str:
        return x

    def anything(**args: Any) -> str:
        return ""

    assert takes_cancel(Tool("a", "", schema, with_cancel))
    assert not takes_cancel(Tool("b", "", schema, without))
    assert not takes_cancel(Tool("c", "", schema, anything))
    # the model's own argument called cancel wins: that tool cannot be handed the event
    named = object_schema({"cancel": {"type": "boolean"}})
    assert not takes_cancel(Tool("d", "", named, with_cancel))


def test_a_tool_that_overruns_its_timeout_is_told_to_stop() -> None:
    told = threading.Event()

    def slow(*, cancel: threading.Event) -> str:
        cancel.wait(30)
        told.set()
        return "stopped"

    registry = ToolRegistry()
    registry.register(Tool("slow", "", object_schema({}), slow, timeout_s=0.2))
    outcome = registry.execute(ToolCall("slow", {}))
    assert outcome.failure == "timeout"
    assert outcome.result.content.startswith("Error: slow did not finish within 0.2 s and was stopped")
    assert told.wait(5)


def test_a_tool_without_cancel_is_still_abandoned_at_once_on_ctrl_c() -> None:
    release = threading.Event()

    def stubborn() -> str:
        release.wait(30)
        return "late"

    registry = ToolRegistry()
    registry.register(Tool("stubborn", "", object_schema({}), stubborn))
    try:
        outcome, after = interrupt_after(registry, ToolCall("stubborn", {}), 0.1)
    finally:
        release.set()
    assert outcome.failure == "interrupted" and after < 0.5
    assert outcome.result.content == "Error: interrupted by the person before the tool finished"


# --- shell ----------------------------------------------------------------------------------------


def test_ctrl_c_stops_a_shell_command_and_everything_it_started(code_tools, ws: Path) -> None:
    registry, _ = code_tools
    marker = _sleep_marker()
    command = f"echo started; echo oops >&2; sleep {marker} & sleep {marker}; echo never"
    outcome, after = interrupt_after(registry, ToolCall("shell", {"command": command}),
                                     ready=lambda: processes_with(f"sleep\x00{marker}"))
    assert after < STOP_WITHIN_S
    assert outcome.failure == "interrupted"
    text = outcome.result.content
    assert text.startswith("stopped by the person (Ctrl-C) after ")
    assert "the command and everything it started were killed" in text
    assert "--- stdout ---\nstarted" in text and "--- stderr ---\noops" in text and "never" not in text
    assert outcome.result.data["killed_reason"] == "cancelled" and outcome.result.data["interrupted"] is True
    assert not outcome.result.ok
    assert wait_gone(lambda: processes_with(f"sleep\x00{marker}")) == []
    assert wait_gone(lambda: processes_working_in(ws)) == []

    again = registry.execute(ToolCall("shell", {"command": "echo fine"}))
    assert again.failure == "" and "--- stdout ---\nfine" in again.result.content


def test_keyboard_interrupt_in_the_calling_thread_also_stops_the_command(code_tools, ws: Path) -> None:
    registry, _ = code_tools
    marker = _sleep_marker()
    # the command says it runs through a named pipe in the workspace: Ctrl-C is pressed on that
    # event, never after a guessed delay, and never once the call has come back by itself
    os.mkfifo(ws / "running")
    returned = threading.Event()
    seen: list[Any] = []  # what the presser read and did, for the failure message

    def press_ctrl_c() -> None:
        with open(ws / "running", "rb") as pipe:  # blocks until the command (or the cleanup below) opens it
            said = pipe.read()
        seen.append(said)
        if said == b"running\n" and not returned.is_set():
            # a real SIGINT to the main thread, as a terminal's Ctrl-C: it also wakes a wait that is
            # blocked in the kernel, which _thread.interrupt_main() (a flag) does not
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            seen.append("pressed")

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    outcome = None
    try:
        outcome = registry.execute(ToolCall("shell", {"command": f"echo running > running; sleep {marker}"}))
    except KeyboardInterrupt:
        pass
    finally:
        returned.set()
        try:  # a presser still waiting for the command is let go (no reader left: ENXIO, nothing to do)
            os.close(os.open(ws / "running", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        presser.join(10)
    assert outcome is None, (f"the call came back by itself ({outcome.failure}: {outcome.result.content}); "
                             f"the presser saw {seen}")
    assert wait_gone(lambda: processes_with(f"sleep\x00{marker}")) == []


def test_sandbox_run_with_cancel_set_first_runs_nothing(ws: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    policy = sandbox.SandboxPolicy.from_settings(settings_for(ws))
    result = sandbox.run(f"touch {ws / 'ran'}", policy, cancel=cancel)
    assert (result.exit_code, result.killed_reason, result.timed_out, result.ok) == (None, "cancelled", False, False)
    assert not (ws / "ran").exists()


# --- pyexe ----------------------------------------------------------------------------------------


def test_ctrl_c_stops_the_running_python_code_and_keeps_the_state(code_tools, ws: Path) -> None:
    registry, _ = code_tools
    assert registry.execute(ToolCall("pyexe", {"code": "kept = 41"})).failure == ""
    outcome, after = interrupt_after(registry, ToolCall("pyexe", {"code": "print('looping')\nwhile True: pass"}))
    assert after < STOP_WITHIN_S
    assert outcome.failure == "interrupted"
    text = outcome.result.content
    assert text.startswith("[stopped by the person (Ctrl-C) after ")
    assert "the Python state (variables, imports, definitions) is kept]\nlooping\n" in text
    assert text.rstrip().endswith("KeyboardInterrupt")
    assert outcome.result.data["interrupted"] is True and not outcome.result.ok

    again = registry.execute(ToolCall("pyexe", {"code": "kept + 1"}))
    assert again.failure == "" and again.result.content == "42"


def test_ctrl_c_in_python_ends_the_processes_the_code_started(code_tools, ws: Path) -> None:
    registry, _ = code_tools
    marker = _sleep_marker()
    code = f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'], start_new_session=True)\nimport time\ntime.sleep(600)"
    outcome, after = interrupt_after(registry, ToolCall("pyexe", {"code": code}),
                                     ready=lambda: processes_with(f"sleep\x00{marker}"))
    assert after < STOP_WITHIN_S and outcome.failure == "interrupted"
    assert wait_gone(lambda: processes_with(f"sleep\x00{marker}")) == []
    assert registry.execute(ToolCall("pyexe", {"code": "2 * 21"})).result.content == "42"


def test_code_that_ignores_ctrl_c_is_killed_and_the_state_lost(code_tools, ws: Path) -> None:
    registry, _ = code_tools
    assert registry.execute(ToolCall("pyexe", {"code": "kept = 41"})).failure == ""
    stubborn = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    outcome, after = interrupt_after(registry, ToolCall("pyexe", {"code": stubborn}))
    assert after < INTERRUPT_GRACE_S + STOP_WITHIN_S
    assert outcome.failure == "interrupted"
    assert outcome.result.content.startswith("Error: stopped by the person (Ctrl-C) after ")
    assert "the Python process was killed; its output and the Python state were lost" in outcome.result.content
    assert outcome.result.data == {"interrupted": True, "state_lost": True}
    assert wait_gone(lambda: processes_working_in(ws)) == []

    again = registry.execute(ToolCall("pyexe", {"code": "'kept' in globals()"}))
    assert again.failure == "" and again.result.content == "False"


def test_pyexe_with_cancel_set_first_runs_nothing(code_tools, ws: Path) -> None:
    _, session = code_tools
    cancel = threading.Event()
    cancel.set()
    result = session.execute(f"open({str(ws / 'ran')!r}, 'w')", cancel=cancel)
    assert result.content == "Error: stopped by the person (Ctrl-C) before the code ran; the Python state is kept"
    assert result.data == {"interrupted": True} and not result.ok
    assert not (ws / "ran").exists()


# --- skills ---------------------------------------------------------------------------------------


def test_ctrl_c_kills_a_looping_skill_and_the_next_call_works(ws: Path) -> None:
    setup = Setup(ws, timeout_s=60.0)
    write(setup.skills / "spin.py", skill_source("spin", "n = 0\nwhile x >= 0:\n    n += 1\nreturn n",
                                                 params="x: int", returns="int", summary="Count forever."))
    write(setup.skills / "double.py", skill_source("double", "return 2 * x", params="x: int", summary="Double it."))
    assert {"spin", "double"} <= set(setup.names()), setup.notices

    outcome, after = interrupt_after(setup.registry, ToolCall("spin", {"x": 1}))
    assert after < STOP_WITHIN_S
    assert outcome.failure == "interrupted"
    assert outcome.result.content.startswith("Error: skill spin was stopped by the person (Ctrl-C) after ")
    assert "its process and everything it started were killed" in outcome.result.content
    assert wait_gone(lambda: processes_working_in(ws)) == []

    again = setup.registry.execute(ToolCall("double", {"x": 21}))
    assert again.failure == "" and again.result.content == "42"


# --- through the agent loop -----------------------------------------------------------------------


def test_ctrl_c_during_a_shell_call_ends_the_turn_and_the_sleep(ws: Path) -> None:
    marker = _sleep_marker()
    settings = Settings(workspace=ws, ctx=None, max_steps=5, max_reply_tokens=256, enable_files=False,
                        tool_timeout_s=60.0)
    registry = ToolRegistry(default_timeout_s=settings.tool_timeout_s)
    registry.register(shell_tool(settings))
    gateway = ScriptedGateway([ToolCall("shell", {"command": f"sleep {marker}"})], context=8192)
    store = SessionStore.for_workspace(ws)
    cancel = threading.Event()
    set_at: list[float] = []

    def press_ctrl_c() -> None:
        end = time.monotonic() + 20
        while not processes_with(f"sleep\x00{marker}") and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.3)
        set_at.append(time.monotonic())
        cancel.set()

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    try:
        presser.start()
        result = Agent(gateway, registry, store, settings).run("wait a minute", cancel=cancel)
        ended = time.monotonic()
        presser.join(30)
        assert set_at and ended - set_at[0] < STOP_WITHIN_S
        assert result.status == "interrupted"
        assert wait_gone(lambda: processes_with(f"sleep\x00{marker}")) == []
        tool_messages = [m.content for m in store.messages(result.session_id) if m.role == "tool"]
        assert len(tool_messages) == 1 and tool_messages[0].startswith("stopped by the person (Ctrl-C)")
        gateway.assert_done()
    finally:
        store.close()
