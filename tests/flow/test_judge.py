"""The judge: real pytest runs in the real sandbox, rounds of feedback, checks_failed, and when it stays quiet."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from boot.settings import Settings
from boot.wiring import build_agent, last_check
from core import sandbox
from core.messages import Message, ToolCall
from core.tools import Tool
from flow.events import ToolCallRecord
from flow.judge import (CLOCK_SLACK_S, PYTEST_COMMAND, Judge, asks_for_passing_tests, changed_since,
                        detect_check_command, files_changed, purge_stale_bytecode)
from gate.scripted import ScriptedGateway

from flow_helpers import Recorder

# the same size on purpose: a fix written within a second of the last check must still be seen
BROKEN = "def add(a, b):\n    return a - b\n"
STILL_BROKEN = "def add(a, b):\n    return a * b\n"
FIXED = "def add(a, b):\n    return a + b\n"
TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


@pytest.fixture
def bwrap() -> None:
    path, reason = sandbox.bwrap_problem()
    if path is None:
        pytest.skip(f"the sandbox cannot run here: {reason}")


@pytest.fixture
def project(workspace: Path) -> Path:
    """A small project whose one test passes until a change breaks calc.add."""
    (workspace / "calc.py").write_text(FIXED)
    (workspace / "tests").mkdir()
    (workspace / "tests" / "test_calc.py").write_text(TEST)
    # no conftest.py: `python -m pytest` puts the workspace on sys.path, as it does for the person
    return workspace


@pytest.fixture
def red_project(project: Path) -> Path:
    """The same project with add already broken before the task, and a second test that passes."""
    (project / "calc.py").write_text(BROKEN)
    (project / "tests" / "test_other.py").write_text("import calc\n\n\ndef test_other():\n    assert calc.OK\n")
    (project / "calc.py").write_text(BROKEN + "OK = True\n")
    # the judge counts a file changed within CLOCK_SLACK_S before a check as changed after it (clocks
    # and file times differ that much); the person's files were there well before the task
    time.sleep(2 * CLOCK_SLACK_S)
    return project


def settings_for(workspace: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"workspace": workspace, "ctx": None, "max_steps": 12, "max_reply_tokens": 512,
                              "enable_files": True, "judge_rounds": 2}
    values.update(overrides)
    return Settings(**values)


def write(content: str, path: str = "calc.py") -> list[ToolCall]:
    """A reply that reads the file and then writes it (the file tools write only what was read)."""
    return [ToolCall("read_file", {"path": path}), ToolCall("write_file", {"path": path, "content": content})]


def agent_for(workspace: Path, steps: list[Any], **overrides: Any):
    gateway = ScriptedGateway(steps, context=8192)
    events = Recorder()
    agent = build_agent(settings_for(workspace, **overrides), gateway=gateway, events=events)
    return agent, gateway, events


def checks(events: Recorder) -> list[str]:
    return [n for n in events.of("notice") if n.startswith("checks:")]


def feedback_seen(into: list[str]):
    """A script step that keeps the judge's message (the last one the model got) and answers with a fix."""
    def step(messages: list[Message], offered: list[Tool]) -> Any:
        assert messages[-1].role == "user"
        into.append(messages[-1].content)
        return write(FIXED)
    return step


# --- detection ----------------------------------------------------------------------------------

def test_the_configured_check_command_wins_and_pytest_is_detected_from_a_tests_folder(workspace):
    assert detect_check_command(Settings(workspace=workspace)) is None
    (workspace / "tests").mkdir()
    assert detect_check_command(Settings(workspace=workspace)) == PYTEST_COMMAND == "python -m pytest -q -x"
    assert detect_check_command(Settings(workspace=workspace, check_command=" make check ")) == "make check"
    (workspace / "tests").rmdir()
    (workspace / "tests").write_text("a file, not a folder")
    assert detect_check_command(Settings(workspace=workspace)) is None


def record(name: str, ok: bool = True) -> ToolCallRecord:
    return ToolCallRecord(name, {}, ok, "", 0.0)


def test_a_successful_write_is_a_change_and_reads_or_a_failed_write_are_not(workspace):
    since = time.time()
    assert files_changed([record("read_file"), record("write_file")], workspace, since)
    assert files_changed([record("edit_file")], workspace, since)
    assert not files_changed([record("write_file", ok=False), record("list_files"), record("plan")], workspace, since)
    assert not files_changed([], workspace, since)


def past_the_slack(workspace: Path) -> float:
    """A run start after everything in ``workspace`` was written, by more than the clock slack."""
    newest = max(max(p.stat().st_mtime_ns, p.stat().st_ctime_ns) for p in workspace.rglob("*"))
    probe = workspace.parent / "clock-probe"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the file system's clock must move on, not just ours
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns > newest + 2 * CLOCK_SLACK_S * 1e9:
            return time.time()
    raise AssertionError("the file system clock did not advance within 5 s")


def test_after_a_shell_call_the_workspace_is_looked_at_and_caches_do_not_count(workspace):
    (workspace / "old.py").write_text("x = 1\n")
    (workspace / "__pycache__").mkdir()
    (workspace / ".pytest_cache").mkdir()
    since = past_the_slack(workspace)
    (workspace / "__pycache__" / "old.cpython-311.pyc").write_bytes(b"\0")
    (workspace / ".pytest_cache" / "README.md").write_text("cache")
    assert not changed_since(workspace, since)
    assert not files_changed([record("shell")], workspace, since)
    (workspace / "sub").mkdir()
    (workspace / "sub" / "new.py").write_text("y = 2\n")
    assert changed_since(workspace, since)
    assert files_changed([record("shell", ok=False)], workspace, since)  # a failing command may still write
    assert files_changed([record("pyexe")], workspace, since)


def test_without_the_run_start_a_tool_that_may_write_counts_as_a_change(workspace):
    assert files_changed([record("shell")], workspace, 0.0)
    assert not files_changed([record("read_file")], workspace, 0.0)


def test_a_moved_file_counts_as_a_change(workspace):
    (workspace / "a.py").write_text("x = 1\n")
    since = past_the_slack(workspace)
    assert not changed_since(workspace, since)
    os.rename(workspace / "a.py", workspace / "b.py")  # keeps the mtime; the ctime moves
    assert changed_since(workspace, since)


# --- with the loop and a real pytest in the sandbox -------------------------------------------------

def test_a_test_the_task_broke_goes_back_to_the_model_until_its_fix_passes(project, bwrap):
    judged: list[str] = []
    steps = [write(STILL_BROKEN), "Rewrote add.", feedback_seen(judged), "Now add is fixed."]
    agent, gateway, events = agent_for(project, steps)
    with gateway:
        result = agent.run("rewrite calc.add")
    assert (result.status, result.answer) == ("done", "Now add is fixed.")
    assert (project / "calc.py").read_text() == FIXED
    message = judged[0]
    assert message.startswith("The checks failed, so the task is not done yet: `python -m pytest -q -x` exited "
                              "with code 1 (1 failing: tests/test_calc.py::test_add). Fix the cause, then answer "
                              "again; the checks run each time you answer (they may fail 1 more time before the run "
                              "ends).\n\n")
    assert "assert 6 == 5" in message and "1 failed" in message
    before = [n for n in events.of("notice") if n.startswith("checks before the change:")]
    assert len(before) == 1 and before[0].startswith(
        "checks before the change: python -m pytest -q --continue-on-collection-errors passed in ")
    notices = checks(events)
    assert notices[0] == "checks: running python -m pytest -q -x"
    assert notices[1].startswith("checks: python -m pytest -q -x failed (exit code 1) in ")
    assert notices[2] == "checks: running python -m pytest -q -x"
    assert notices[3].startswith("checks: python -m pytest -q -x passed in ") and notices[3].endswith(" s")
    assert len(notices) == 4
    last = last_check(agent)
    assert last is not None and last.passed and last.exit_code == 0 and "1 passed" in last.output
    # the feedback is in the session like any user message, so a resumed session knows why
    assert any(m.role == "user" and m.content == message for m in agent.sessions.messages(result.session_id))
    agent.sessions.close()


def test_after_the_last_round_the_run_ends_checks_failed_with_the_output(project, bwrap):
    steps = [write(STILL_BROKEN), "Fixed.", "It is fixed, really.", "Definitely fixed."]
    agent, gateway, events = agent_for(project, steps, judge_rounds=2)
    with gateway:
        result = agent.run("fix calc.add")
    assert result.status == "checks_failed"
    # one line for the person and for scripts; the output stays with the last check
    assert result.reason == ("the checks failed 3 times: `python -m pytest -q -x` exited with code 1 "
                             "(1 failing: tests/test_calc.py::test_add)")
    last = last_check(agent)
    assert last is not None and "assert 6 == 5" in last.output and "1 failed" in last.tail()
    assert len([n for n in checks(events) if "failed (exit code 1)" in n]) == 3
    assert agent.sessions.info(result.session_id).status == "checks_failed"
    agent.sessions.close()


def test_with_no_rounds_the_first_failure_ends_the_run(project, bwrap):
    agent, gateway, _ = agent_for(project, [write(STILL_BROKEN), "Fixed."], judge_rounds=0)
    with gateway:
        result = agent.run("fix calc.add")
    assert result.status == "checks_failed"
    assert result.reason.startswith("the checks failed once: `python -m pytest -q -x` exited with code 1")
    agent.sessions.close()


def test_rounds_are_counted_per_run(project, bwrap):
    steps = [write(STILL_BROKEN), "Fixed.", "Sure it is."]
    agent, gateway, _ = agent_for(project, steps, judge_rounds=1)
    with gateway:
        first = agent.run("fix calc.add")
    assert first.status == "checks_failed"
    (project / "calc.py").write_text(FIXED)  # the person puts it right; the next run starts green
    gateway.steps += [write(STILL_BROKEN), "Fixed again.", write(FIXED), "Done."]
    with gateway:
        second = agent.run("try again", session_id=first.session_id)
    assert second.status == "done"  # a fresh run gets its rounds back
    agent.sessions.close()


def test_failures_from_before_the_task_are_not_blamed_on_it_and_are_named(red_project, bwrap):
    # the model runs a command (which may write) and answers: the old failure is not its doing
    steps = [ToolCall("shell", {"command": "echo 4 > answer.txt"}), "4"]
    agent, gateway, events = agent_for(red_project, steps, judge_rounds=0)
    with gateway:
        result = agent.run("compute 2+2 and keep it in answer.txt")
    assert (result.status, result.answer) == ("done", "4")
    before = [n for n in events.of("notice") if n.startswith("checks before the change:")]
    assert before == ["checks before the change: 1 already failing: tests/test_calc.py::test_add"]
    last = last_check(agent)
    assert last is not None and last.passed and last.already_failing == ("tests/test_calc.py::test_add",)
    assert "1 passed, 1 deselected" in last.output  # the old failure was left out of the run
    assert checks(events)[-1].startswith("checks: python -m pytest -q -x passed (1 failing before the task left "
                                         "out) in ")
    agent.sessions.close()


def test_a_new_failure_beside_an_old_one_still_ends_the_run_and_only_it_is_shown(red_project, bwrap):
    judged: list[str] = []

    def note_and_stop(messages: list[Message], offered: list[Tool]) -> Any:
        judged.append(messages[-1].content)
        return "Still done."

    steps = [write(BROKEN + "OK = False\n"), "Done.", note_and_stop]
    agent, gateway, _ = agent_for(red_project, steps, judge_rounds=1)
    with gateway:
        result = agent.run("tidy calc.py")
    assert result.status == "checks_failed"
    assert result.reason == ("the checks failed 2 times: `python -m pytest -q -x` exited with code 1 (1 failing: "
                             "tests/test_other.py::test_other); failing before the task too, not counted: "
                             "tests/test_calc.py::test_add")
    assert "\n" not in result.reason
    message = judged[0]
    assert "These were failing before your change and are not yours to fix (they are left out): " \
           "tests/test_calc.py::test_add." in message
    assert "assert calc.OK" in message and "assert 6 == 5" not in message and "assert -1 == 5" not in message
    agent.sessions.close()


def test_another_check_command_that_fails_as_before_passes_and_a_new_failure_does_not(red_project, bwrap):
    command = "python -m pytest -q -p no:cacheprovider"
    agent, gateway, events = agent_for(red_project, [ToolCall("shell", {"command": "touch notes.txt"}), "Done."],
                                       check_command=command, judge_rounds=0)
    with gateway:
        result = agent.run("make notes")
    assert result.status == "done"
    last = last_check(agent)
    assert last is not None and last.passed and last.note == "1 failing before the task, none new"
    assert last.line().startswith(f"checks: {command} failed only as before the task, so it is not counted (1 failing "
                                  "before the task, none new) in ")
    gateway.steps += [write(BROKEN), "Done."]
    with gateway:
        second = agent.run("drop OK", session_id=result.session_id)
    assert second.status == "checks_failed" and "tests/test_other.py::test_other" in second.reason
    agent.sessions.close()


def test_the_sandboxs_placeholder_and_the_agents_state_are_not_changes(workspace):
    (workspace / "a.py").write_text("x = 1\n")
    since = past_the_slack(workspace)
    (workspace / ".env").write_bytes(b"")  # what the sandbox leaves while a command runs
    (workspace / ".agent").mkdir()
    (workspace / ".agent" / "sessions.db").write_bytes(b"\0")
    (workspace / "skills").mkdir()
    (workspace / "skills" / ".manifest.lock").write_bytes(b"")
    assert not changed_since(workspace, since)
    assert not files_changed([record("pyexe")], workspace, since)
    (workspace / "skills" / "slug.py").write_text("def slug(s): return s\n")
    assert changed_since(workspace, since)


def test_when_the_sandbox_cannot_start_the_answer_is_not_accepted(project, tmp_path, monkeypatch):
    # a bwrap that cannot run: the checks cannot run, and the run says so instead of passing
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    agent, gateway, events = agent_for(project, [write(STILL_BROKEN), "Done."])
    with gateway:
        result = agent.run("rewrite calc.add")
    assert result.status == "checks_failed"
    assert result.reason.startswith("the checks could not run, so the answer was not accepted: cannot run code in "
                                    "the sandbox: ")
    assert "Permission denied" in result.reason and "\n" not in result.reason
    assert any(n.startswith("checks: could not run: ") for n in events.of("notice"))
    agent.sessions.close()


def test_a_run_that_starts_where_the_last_check_left_off_does_not_run_the_suite_again(red_project, bwrap):
    steps = [ToolCall("shell", {"command": "ls tests"}), "Listed tests.",
             ToolCall("shell", {"command": "ls"}), "Listed."]
    agent, gateway, events = agent_for(red_project, steps, judge_rounds=0)
    with gateway:
        first = agent.run("list the tests")
        second = agent.run("list the files", session_id=first.session_id)
    assert (first.status, second.status) == ("done", "done")
    before = [n for n in events.of("notice") if n.startswith("checks before the change:")]
    assert before[0].startswith("checks before the change: 1 already failing")
    assert before[1] == ("checks before the change: as after the last check (1 already failing: "
                         "tests/test_calc.py::test_add)")
    assert len(before) == 2
    (red_project / "calc.py").write_text(FIXED + "OK = True\n")  # the person changes something: asked again
    gateway.steps += [ToolCall("shell", {"command": "ls"}), "Listed again."]
    with gateway:
        agent.run("list again", session_id=first.session_id)
    assert [n for n in events.of("notice") if n.startswith("checks before the change:")][-1].startswith(
        "checks before the change: python -m pytest -q --continue-on-collection-errors passed in ")
    agent.sessions.close()


def test_ctrl_c_stops_the_checks_before_the_change_at_once(workspace, bwrap):
    judge = Judge(settings_for(workspace, check_command="sleep 60"))
    watch = judge.watch(None)
    watch.cancel = threading.Event()
    timer = threading.Timer(0.5, watch.cancel.set)
    timer.start()
    start = time.monotonic()
    try:
        watch.thinking(1)
        watch.tool_start(ToolCall("shell", {"command": "ls"}))
    finally:
        timer.cancel()
    assert time.monotonic() - start < 10
    assert judge.baseline is None


def test_a_sandbox_that_passes_its_trial_but_cannot_start_the_checks_fails_the_run(project, tmp_path, monkeypatch,
                                                                                      bwrap):
    real = sandbox.find_bwrap()
    fake = tmp_path / "bin"
    fake.mkdir()
    # the trial run (in a sandbox-probe- folder) works; the checks in the workspace do not start
    (fake / "bwrap").write_text(f'#!/bin/sh\ncase "$*" in *sandbox-probe-*|--version) exec {real} "$@";; esac\n'
                                "echo \"bwrap: Can't mount proc on /newroot/proc: Operation not permitted\" >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    agent, gateway, _ = agent_for(project, [write(STILL_BROKEN), "Done."])
    with gateway:
        result = agent.run("rewrite calc.add")
    assert result.status == "checks_failed"
    assert result.reason == ("the checks could not run, so the answer was not accepted: the sandbox did not start: "
                             "bwrap: Can't mount proc on /newroot/proc: Operation not permitted")
    agent.sessions.close()


def test_a_check_command_that_cannot_be_found_fails_closed_though_it_failed_the_same_way_before(project, bwrap):
    agent, gateway, events = agent_for(project, [write(STILL_BROKEN), "Done."], check_command="no-such-checker -q")
    with gateway:
        result = agent.run("rewrite calc.add")
    assert result.status == "checks_failed"
    assert result.reason.startswith("the checks could not run, so the answer was not accepted: `no-such-checker -q` "
                                    "exited with code 127: ")
    assert "not found" in result.reason
    assert any(n.startswith("checks before the change: no-such-checker -q could not run: ") for n in events.of("notice"))
    agent.sessions.close()


def test_a_task_about_making_the_tests_pass_is_held_to_the_ones_failing_before_it(red_project, bwrap):
    judged: list[str] = []

    def fix(messages: list[Message], offered: list[Tool]) -> Any:
        judged.append(messages[-1].content)
        return write(FIXED + "OK = True\n")

    steps = [write(STILL_BROKEN + "OK = True\n"), "Fixed.", fix, "Now it is fixed."]
    agent, gateway, events = agent_for(red_project, steps)
    with gateway:
        result = agent.run("The tests in tests/ are failing. Fix calc.py so they pass.")
    assert (result.status, result.answer) == ("done", "Now it is fixed.")
    assert "checks: the task is about making tests pass, so the ones failing before it count too" in events.of("notice")
    assert "tests/test_calc.py::test_add" in judged[0] and "assert 6 == 5" in judged[0]
    agent.sessions.close()


@pytest.mark.parametrize(("task", "held"), [
    ("The tests in tests/ are failing. Fix the code in calc.py so they all pass.", True),
    ("One of the tests in tests/test_inventory.py fails. Find out why and fix the bug.", True),
    ("make test_add green", True),
    ("look at tests/test_calc.py", True),  # names the failing test's file
    ("Add a test for slugify", False),
    ("Compute 2+2 with the pyexe tool, then reply with just the number.", False),
    ("Remember this preference: always use pytest -q", False),
])
def test_which_tasks_are_about_making_tests_pass(task, held):
    assert asks_for_passing_tests(task, ["tests/test_calc.py::test_add"]) is held


def test_no_check_runs_when_nothing_was_changed(project, bwrap):
    steps = [ToolCall("read_file", {"path": "calc.py"}), "add subtracts: that is the bug."]
    agent, gateway, events = agent_for(project, steps)
    with gateway:
        result = agent.run("why does the test fail?")
    assert (result.status, result.answer) == ("done", "add subtracts: that is the bug.")
    assert checks(events) == [] and last_check(agent) is None
    agent.sessions.close()


def test_without_a_check_command_the_judge_accepts_silently(workspace, bwrap):
    agent, gateway, events = agent_for(workspace, [write(BROKEN), "Wrote calc.py."])
    with gateway:
        result = agent.run("write calc.py")
    assert result.status == "done" and checks(events) == []
    agent.sessions.close()


def test_a_configured_check_command_runs_in_the_sandbox(workspace, bwrap):
    # the agent's own code is outside the sandbox: a check can see the workspace and nothing of ours
    command = f"test -f calc.py && test ! -e {sandbox.PROJECT_ROOT / 'flow' / 'judge.py'} && echo checked-in-sandbox"
    assert (sandbox.PROJECT_ROOT / "flow" / "judge.py").is_file()
    agent, gateway, events = agent_for(workspace, [write(FIXED), "Wrote it."], check_command=command)
    with gateway:
        result = agent.run("write calc.py")
    assert result.status == "done"
    last = last_check(agent)
    assert last is not None and last.passed and last.output == "checked-in-sandbox\n"
    assert checks(events)[-1].startswith(f"checks: {command} passed in ")
    agent.sessions.close()


def test_a_stale_pyc_in_the_workspace_does_not_hide_a_fix(workspace, bwrap):
    # the model's own test run compiled calc.py at 0.2 s into a second; its fix, the same size, lands
    # at 0.5 s into the same second: the .pyc's record (whole seconds, size) still matches
    source = workspace / "calc.py"
    second = int(time.time()) - 10
    source.write_text(BROKEN)
    os.utime(source, ns=(second * 10**9 + 10**8, second * 10**9 + 10**8))
    pyc = Path(importlib.util.cache_from_source(str(source)))
    py_compile.compile(str(source), cfile=str(pyc))
    os.utime(pyc, ns=(second * 10**9 + 2 * 10**8, second * 10**9 + 2 * 10**8))
    source.write_text(FIXED)
    os.utime(source, ns=(second * 10**9 + 5 * 10**8, second * 10**9 + 5 * 10**8))
    stale = subprocess.run([sys.executable, "-c", "import calc; print(calc.add(2, 3))"], cwd=workspace,
                           capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert stale.stdout == "-1\n"  # plain Python is fooled
    result = Judge(settings_for(workspace)).check("python -c 'import calc; print(calc.add(2, 3))'")
    assert (result.passed, result.output) == (True, "5\n")


def test_only_bytecode_older_than_its_source_is_removed(workspace):
    (workspace / "pkg" / "__pycache__").mkdir(parents=True)
    old, fresh, orphan = (workspace / "pkg" / "__pycache__" / f"{n}.cpython-311.pyc" for n in ("old", "fresh", "gone"))
    for pyc in (old, fresh, orphan):
        pyc.write_bytes(b"\0")
    (workspace / "pkg" / "old.py").write_text("x = 1\n")
    (workspace / "pkg" / "fresh.py").write_text("x = 1\n")
    now = time.time()
    os.utime(old, (now - 10, now - 10))
    os.utime(fresh, (now + 10, now + 10))
    assert purge_stale_bytecode(workspace) == 1
    assert (not old.exists(), fresh.exists(), orphan.exists()) == (True, True, True)


def test_stderr_comes_with_stdout_in_order(workspace, bwrap):
    result = Judge(settings_for(workspace)).check("echo one; echo two >&2; echo three; exit 3")
    assert (result.passed, result.exit_code, result.output) == (False, 3, "one\ntwo\nthree\n")


def test_a_check_past_its_timeout_is_killed_and_fails(workspace, bwrap):
    judge = Judge(settings_for(workspace), timeout_s=1.0)
    start = time.monotonic()
    result = judge.check("echo started; sleep 30")
    assert time.monotonic() - start < 10
    assert (result.passed, result.timed_out, result.exit_code) == (False, True, None)
    assert result.output == "started\n\n[killed: the checks did not finish within 1 s]"
    assert result.line().startswith("checks: echo started; sleep 30 timed out in 1.")


def test_ctrl_c_stops_a_running_check_at_once(workspace, bwrap):
    judge = Judge(settings_for(workspace))
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    start = time.monotonic()
    try:
        result = judge.check("sleep 60", cancel=cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 10
    assert (result.passed, result.exit_code, result.timed_out) == (False, None, False)
    assert result.line().startswith("checks: sleep 60 was stopped in ")


def test_an_empty_tests_folder_passes_as_no_tests_collected(workspace, bwrap):
    (workspace / "tests").mkdir()
    result = Judge(settings_for(workspace)).check(PYTEST_COMMAND)
    assert (result.passed, result.exit_code, result.note) == (True, 5, "no tests collected")
    assert result.line().startswith("checks: python -m pytest -q -x passed (no tests collected) in ")


def test_check_output_with_many_byte_characters_is_not_garbled(workspace, bwrap):
    judge = Judge(settings_for(workspace))
    judge.policy = judge.policy.replace(output_bytes=1024)
    text = "a" + "é" * 300  # 601 bytes, kept whole, one "é" straddling the head/tail seam
    assert judge.check(f"printf '%s' '{text}' >&2").output == text
    cut = judge.check(f"for i in 1 2 3 4; do printf '%s' '{text}'; done").output  # cut, between characters
    head, rest = cut.split("\n[... ")
    tail = rest.split(" bytes of output omitted ...]\n")[1]
    assert "\ufffd" not in cut and head.startswith("aé") and set(tail) == {"é"}


def test_a_check_that_leaves_a_process_holding_the_output_ends_when_it_exits(workspace, bwrap):
    start = time.monotonic()
    result = Judge(settings_for(workspace)).check("sleep 60 & echo done")
    assert (result.passed, result.output) == (True, "done\n") and time.monotonic() - start < 10
