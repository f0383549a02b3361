"""The pyexe tool: a persistent, sandboxed Python REPL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.errors import ToolError
from sandbox_helpers import require_bwrap, settings_for, wait_no_process_with
from tool.pyexe import PythonSession


@pytest.fixture
def session(tmp_path: Path):
    require_bwrap()
    s = PythonSession(settings_for(tmp_path / "ws", tool_timeout_s=20))
    yield s
    s.close()


def test_state_persists_between_calls(session: PythonSession) -> None:
    assert session.execute("import math\nx = 20\ndef double(v):\n    return 2 * v").content == "(no output)"
    assert session.execute("double(x) + math.floor(1.5)").content == "41"


def test_the_last_expression_is_shown_like_a_repl(session: PythonSession) -> None:
    assert session.execute("print('line')\n[1, 2]").content == "line\n[1, 2]"
    assert session.execute("None").content == "(no output)"
    assert session.execute("'text'").content == "'text'"
    assert session.execute("_").content == "'text'"


def test_output_of_child_processes_is_captured_in_order(session: PythonSession) -> None:
    result = session.execute("import os, sys\nprint('first')\nos.system('echo second; echo err >&2')\nNone")
    assert result.content == "first\nsecond\n[stderr]\nerr"


def test_tracebacks_are_trimmed_to_the_users_code(session: PythonSession) -> None:
    result = session.execute("def f():\n    return 1 / 0\nf()")
    assert not result.ok
    assert result.content.splitlines() == [
        "Traceback (most recent call last):",
        '  File "<cell-1>", line 3, in <module>',
        "    f()",
        '  File "<cell-1>", line 2, in f',
        "    return 1 / 0",
        "           ~~^~~",
        "ZeroDivisionError: division by zero",
    ]
    assert result.summary == "ZeroDivisionError: division by zero"


def test_a_syntax_error_is_reported_and_the_state_kept(session: PythonSession) -> None:
    session.execute("kept = 5")
    result = session.execute("def broken(:\n    pass")
    assert not result.ok and "SyntaxError" in result.content and "pyexe_driver" not in result.content
    assert session.execute("kept").content == "5"


def test_a_timeout_kills_the_interpreter_and_says_the_state_was_lost(session: PythonSession) -> None:
    session.execute("kept = 5")
    result = session.execute("import time\ntime.sleep(30)", timeout_s=0.5)
    assert not result.ok and "state was lost" in result.content
    after = session.execute("kept")
    assert "NameError" in after.content
    assert session.execute("1 + 1").content == "2"


def test_reset_starts_a_fresh_interpreter(session: PythonSession) -> None:
    tool = session.tool()
    tool.fn(code="kept = 5")
    assert tool.fn(reset=True).content.startswith("Python state reset")
    assert "NameError" in tool.fn(code="kept").content
    assert tool.fn(code="kept = 1\nkept", reset=True).content == "[fresh interpreter]\n1"


def test_code_runs_in_the_workspace_and_can_import_from_it(session: PythonSession, tmp_path: Path) -> None:
    (tmp_path / "ws" / "helper.py").write_text("VALUE = 'from helper'\n")
    assert session.execute("import helper\nhelper.VALUE").content == "'from helper'"
    session.execute("open('out.txt', 'w').write('written')")
    assert (tmp_path / "ws" / "out.txt").read_text() == "written"


def test_system_exit_is_a_result_not_the_end_of_the_session(session: PythonSession) -> None:
    assert "SystemExit: 3" in session.execute("raise SystemExit(3)").content
    assert session.execute("2 * 21").content == "42"


def test_the_tool_needs_code_unless_resetting(session: PythonSession) -> None:
    tool = session.tool()
    assert tool.name == "pyexe" and set(tool.parameters["properties"]) == {"code", "reset"}
    with pytest.raises(ToolError, match="no code"):
        tool.fn(code=" ")


def test_close_ends_the_process_and_everything_in_it(tmp_path: Path) -> None:
    require_bwrap()
    session = PythonSession(settings_for(tmp_path / "ws"))
    marker = f"{abs(hash(tmp_path)) % 1000}.{abs(hash(tmp_path.name)) % 10**6}"
    session.execute(f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'])\nimport time\nMARK = 1")
    assert session._proc is not None
    pid = session._proc.pid
    session.close()
    assert not Path(f"/proc/{pid}").exists()
    assert wait_no_process_with(f"sleep\x00{marker}") == []


def test_the_schema_is_valid(session: PythonSession) -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(session.tool().parameters)
    assert Draft202012Validator(session.tool().parameters).is_valid({"code": "1", "reset": True})


def test_state_survives_calls_from_short_lived_threads(session: PythonSession) -> None:
    # the registry runs every call in a worker thread that ends with it; bwrap's
    # --die-with-parent must not take the interpreter down with that thread
    import threading

    results: list[str] = []

    def call(code: str) -> None:
        results.append(session.execute(code).content)

    for code in ("n = 20", "n + 1"):
        worker = threading.Thread(target=call, args=(code,))
        worker.start()
        worker.join()
    assert results == ["(no output)", "21"]


def test_an_interpreter_that_died_between_calls_is_reported(session: PythonSession) -> None:
    import os
    import signal

    session.execute("n = 20")
    assert session._proc is not None
    proc = session._proc
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while proc.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    result = session.execute("'after'")
    assert result.content.startswith("[the Python process died (exit status -9) after the last call: "
                                     "this ran in a fresh interpreter")
    assert result.content.endswith("\n'after'") and result.data["state_lost"] is True


def test_output_with_many_byte_characters_is_not_garbled(session: PythonSession) -> None:
    # 140 KB: more than the head half of the 256 KiB cap, so one "é" straddles the head/tail seam
    result = session.execute("print('a' + 'é' * 70000)")
    assert result.ok and not result.data["truncated"]
    assert result.content == "a" + "é" * 70000


def test_the_driver_cuts_output_between_characters() -> None:
    from tool.pyexe_driver import Capture

    data = ("a" + "€" * 1000).encode()
    cap = Capture(1024)
    cap.feed(data)
    text = cap.text()
    assert cap.truncated and "\ufffd" not in text
    head, tail = text.split("\n[... ", 1)
    omitted, tail = tail.split(" bytes of output omitted ...]\n")
    assert head.strip("€") == "a" and set(tail) == {"€"}
    assert len(head.encode()) + int(omitted) + len(tail.encode()) == len(data)


_WRITE_TO_THE_REPLY_CHANNEL = """
import fcntl, os, struct
body = {body!r}
for name in os.listdir('/proc/self/fd'):
    fd = int(name)
    try:
        is_pipe = os.readlink(f'/proc/self/fd/{{fd}}').startswith('pipe:')
        writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
    except OSError:
        continue
    if is_pipe and writable and fd not in (1, 2):  # the driver's own reply channel
        os.write(fd, struct.pack('>I', len(body)) + body)
"""


@pytest.mark.parametrize("body", [b"\xff\xfe not UTF-8", b"{not json", b"[1, 2]",
                                  b'{"stdout": "forged", "stderr": "", "value": null, "error": null}'],
                         ids=["not-utf8", "not-json", "not-an-object", "forged-reply"])
def test_code_writing_to_the_reply_channel_loses_the_state_but_not_the_agent(session: PythonSession,
                                                                            body: bytes) -> None:
    session.execute("kept = 5")
    result = session.execute(_WRITE_TO_THE_REPLY_CHANNEL.format(body=body))
    assert not result.ok and "forged" not in result.content
    assert result.content.startswith("Error: the Python process sent a reply the agent could not read")
    assert "the Python state was lost" in result.content and result.data.get("state_lost") is True
    assert "NameError" in session.execute("kept").content
    assert session.execute("print('own output')\n6 * 7").content == "own output\n42"


def test_writing_to_low_descriptors_by_mistake_does_not_reach_the_reply_channel(session: PythonSession) -> None:
    session.execute("kept = 5")
    result = session.execute("import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'junk')\n"
                             "    except OSError:\n        pass")
    assert result.ok and result.content == "(no output)"
    assert session.execute("kept").content == "5"
