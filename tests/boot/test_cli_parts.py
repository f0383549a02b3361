"""The CLI's parts in-process: flags from settings, exit codes, the spinner, slash-command completion."""

from __future__ import annotations

import io
import threading
import time

import pytest

from boot.cli import SERVER_ONLY, build_parser, setting_overrides
from boot.screen import PlainScreen, call_brief, end_line, result_brief, tokens
from boot.settings import Settings, load_settings
from boot.turns import STATUS_EXIT, exit_code
from core.messages import ToolCall
from core.tools import ToolResult
from flow.events import RUN_STATUSES, RunResult


def test_every_agent_setting_has_a_flag_booleans_can_be_turned_off_and_server_settings_have_none():
    parser = build_parser()
    flags = {opt for action in parser._actions for opt in action.option_strings}
    assert SERVER_ONLY < set(Settings.model_fields)  # a renamed server setting must not come back as a flag
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name in SERVER_ONLY:
            assert flag not in flags, name
            continue
        assert flag in flags, name
        if info.annotation is bool:
            assert "--no-" + flag[2:] in flags, name


def test_flags_become_overrides_and_flags_left_out_do_not():
    args = build_parser().parse_args(["--max-steps", "7", "--no-enable-shell", "--offline", "--workspace", "w"])
    assert setting_overrides(args) == {"max_steps": "7", "enable_shell": False, "enable_fetch": False,
                                       "workspace": "w"}
    settings = load_settings(**setting_overrides(args))
    assert (settings.max_steps, settings.enable_shell, settings.enable_fetch) == (7, False, False)


def test_every_run_status_has_its_documented_exit_code():
    assert set(STATUS_EXIT) == set(RUN_STATUSES)
    assert [exit_code(s) for s in RUN_STATUSES] == [0, 1, 130, 1, 1, 1]


def test_short_forms_of_calls_and_results_fit_on_one_line():
    call = ToolCall("write_file", {"path": "a.py", "content": "x = 1\n" * 100})
    assert call_brief(call) == r"write_file(path='a.py', content='x = 1\nx = 1\nx = 1\nx = 1\nx = 1\nx = 1\nx =…')"
    assert result_brief(ToolResult("line one\nline two\nline three")) == "line one (+2 lines)"
    assert result_brief(ToolResult("anything", summary="wrote 3 lines")) == "wrote 3 lines"
    assert result_brief(ToolResult("   ")) == "(no output)"
    assert [tokens(n) for n in (999, 1234, 8192, 32768, 2_500_000)] == ["999", "1.2k", "8.2k", "33k", "2.5M"]


def test_end_line_says_why_a_run_stopped_without_repeating_itself():
    assert end_line(RunResult("done", "ok", "s")) == ""
    assert end_line(RunResult("interrupted", "", "s", reason="interrupted while the model was answering")) == \
        "interrupted while the model was answering"
    assert end_line(RunResult("budget_exceeded", "", "s", reason="step budget spent: 3 model calls")) == \
        "stopped: budget spent: step budget spent: 3 model calls"
    # the real cause, not the status's generic words: a repeated call is not "malformed"
    repeated = RunResult("format_errors", "", "s", reason='the model made the same failing call 3 times: '
                                                          'shell {"command": "sudo mount"}')
    assert end_line(repeated) == 'stopped: the model made the same failing call 3 times: shell {"command": "sudo mount"}'
    assert "malformed" not in end_line(repeated)
    checks = RunResult("checks_failed", "", "s", reason="the checks failed once: `make test` exited with code 2")
    assert end_line(checks) == "stopped: the checks failed once: `make test` exited with code 2"
    long = end_line(RunResult("error", "", "s", reason="boom\n" * 50))
    assert "\n" not in long and len(long) <= 320


def test_the_spinner_shows_what_runs_on_a_terminal_and_is_gone_when_text_arrives():
    out, err = io.StringIO(), io.StringIO()
    screen = PlainScreen(out, err, spinner=True, interval_s=0.01)
    screen.thinking(2)
    deadline = time.monotonic() + 5
    while "thinking (step 2)" not in err.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "thinking (step 2) 0." in err.getvalue()
    screen.text("Hello")
    shown = len(err.getvalue())
    assert err.getvalue().endswith("\r\x1b[2K")  # the spinner's line was wiped before the text
    screen.assistant_done("Hello", ())
    time.sleep(0.05)
    assert len(err.getvalue()) == shown  # no spinner while nothing is pending
    screen.close()
    assert out.getvalue() == "Hello\n"


def test_without_a_terminal_there_is_no_spinner_only_tool_lines():
    out, err = io.StringIO(), io.StringIO()
    screen = PlainScreen(out, err, spinner=False)
    call = ToolCall("list_files", {"path": "."})
    screen.thinking(1)
    screen.tool_start(call)
    screen.tool_end(call, ToolResult("a.py\nb.py", summary="2 files"), 0.25)
    screen.finish(RunResult("done", "Two files.", "s"), answer=False)
    assert err.getvalue() == "→ list_files(path='.')\n  ✓ 2 files (0.2s)\n"
    assert out.getvalue() == ""


def test_the_chat_completes_slash_commands_and_their_arguments(tmp_path):
    pytest.importorskip("prompt_toolkit")
    from prompt_toolkit.document import Document

    from boot.chat import SlashCompleter
    from boot.commands import builtin_commands

    class Table:  # only the command table: the completer needs nothing else of a chat
        def __init__(self) -> None:
            self.table = {c.name: c for c in builtin_commands()}

        def commands(self):
            return list(self.table.values())

        def command(self, name):
            return self.table.get(name)

    completer = SlashCompleter(Table())  # type: ignore[arg-type]

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), None)]

    assert complete("/s") == ["/sessions", "/skills"]
    assert complete("/") == ["/help", "/sessions", "/resume", "/model", "/gemini", "/local", "/plan", "/compact",
                             "/clear", "/cost", "/skills", "/memory", "/quit"]
    assert complete("/memory l") == ["list"]
    assert complete("/skills re") == ["remove", "restore"]
    assert complete("write a test") == []


def test_a_line_starting_with_a_path_is_a_task_not_a_command():
    from boot.chat import is_command

    assert [is_command(line) for line in ("/help", "/resume 3f2a", "/?", "/memory flaky test", "/")] == [True] * 5
    assert [is_command(line) for line in ("/usr/bin/python crashes", "/tmp/x.py fails", "fix /help")] == [False] * 3


def test_the_chat_screen_prints_from_the_loop_while_the_live_region_redraws_without_deadlock():
    from rich.console import Console

    from boot.screen import ChatScreen

    screen = ChatScreen(Console(file=io.StringIO(), force_terminal=True, width=80, height=24))
    screen.begin()
    stop = threading.Event()

    def redraw() -> None:  # what rich's refresh thread does, at 200 Hz (rich's own: a few times a second)
        # a loop with no pause at all takes rich's lock back at once, every time, on an idle machine,
        # and the other thread never gets it: starvation by the test, not a deadlock of the screen
        while not stop.wait(0.005):
            screen._live.refresh()

    def loop_events() -> None:
        call = ToolCall("read_file", {"path": "a.py"})
        for i in range(300):
            screen.thinking(i)
            screen.text(f"piece {i} ")
            screen.tool_start(call)
            screen.tool_end(call, ToolResult("x", summary="read a.py"), 0.01)
            screen.assistant_done(f"answer {i}", ())
            screen.notice("compacted")

    drawer = threading.Thread(target=redraw, daemon=True)
    worker = threading.Thread(target=loop_events, daemon=True)
    drawer.start()
    worker.start()
    worker.join(60)
    stop.set()
    drawer.join(10)
    assert not worker.is_alive() and not drawer.is_alive(), "the chat screen deadlocked"
    screen.end()


def test_the_spinner_never_wraps_so_it_is_erased_whole_and_shows_prompt_progress(monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    out, err = io.StringIO(), io.StringIO()
    screen = PlainScreen(out, err, spinner=True, interval_s=0.01)
    screen.thinking(1)
    screen.prompt_progress(2048, 9731, 0, 1000.0)
    deadline = time.monotonic() + 5
    while "processing" not in err.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    screen.close()
    frames = [f for f in err.getvalue().split("\r\x1b[2K") if f]
    assert frames and all(len(f) <= 29 for f in frames)
    assert frames[0].startswith(("⠋ processing prompt 2,048/9", "⠋ thinking"))
    assert any("processing prompt 2,048/9" in f for f in frames)
    assert screen.speed.tokens_per_s == 2048.0


def test_the_chat_spinner_turns_between_renders_and_shows_prompt_progress():
    from rich.console import Console

    from boot.screen import ChatScreen

    console = Console(file=io.StringIO(), width=80, height=20, force_terminal=True)
    screen = ChatScreen(console)
    screen.thinking(1)
    screen.prompt_progress(1024, 2291, 0, 24000.0)

    def frame() -> str:
        return "".join(seg.text for line in console.render_lines(screen.view(), console.options, pad=False)
                       for seg in line)

    first = frame()
    assert "processing prompt 1,024/2,291 tokens (44%)" in first
    deadline = time.monotonic() + 5
    while frame()[:1] == first[:1] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert frame()[:1] != first[:1]  # a new spinner each render stayed on its first frame
