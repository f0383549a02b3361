"""Running skills in the sandbox: failures are errors, never successes; the sandbox holds."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from core.errors import ToolError
from core.sandbox import PROJECT_ROOT

from skills_helpers import Setup, require_bwrap, skill_source, write


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    require_bwrap()
    return Setup(tmp_path / "ws", timeout_s=5.0)


def drop(setup: Setup, name: str, body: str, *, params: str = "x: int", returns: str = "int", head: str = "") -> None:
    write(setup.skills / f"{name}.py", skill_source(name, body, params=params, returns=returns, head=head))
    assert name in setup.names(), setup.notices


def test_an_exception_is_an_error_with_the_skill_s_traceback(setup: Setup):
    drop(setup, "boom", "return helper(x)", head="def helper(v):\n    raise ValueError(f'bad value {v}')\n\n\n")
    result = setup.call("boom", x=3)
    assert not result.ok
    assert result.content.startswith("Error: skill boom raised an exception:\nTraceback (most recent call last):")
    assert "in boom" in result.content and "in helper" in result.content
    assert "ValueError: bad value 3" in result.content
    assert "runner_main" not in result.content and "exec(" not in result.content


def test_a_value_json_cannot_carry_is_an_error(setup: Setup):
    drop(setup, "as_set", "return {x}", returns="list[int]")
    result = setup.call("as_set", x=1)
    assert not result.ok and "skill as_set returned set, which is not JSON-serialisable" in result.content
    drop(setup, "as_nan", "return float('nan')", returns="float")
    result = setup.call("as_nan", x=1)
    assert not result.ok and "returned float, which is not JSON-serialisable" in result.content


def test_printing_does_not_corrupt_the_result(setup: Setup):
    drop(setup, "chatty", "print('{\"not\": \"the result\"}')\nreturn {'x': x}", returns="dict[str, int]")
    result = setup.call("chatty", x=4)
    assert result.ok and result.content == '{"x": 4}' and result.data["value"] == {"x": 4}


def test_a_skill_that_exits_without_a_result_is_an_error(setup: Setup):
    drop(setup, "quits", "import os\nos._exit(0)")
    result = setup.call("quits", x=1)
    assert not result.ok and "skill quits ended without a result (exit status 0)" in result.content


def test_sys_exit_in_a_skill_is_an_error_not_a_success(setup: Setup):
    drop(setup, "exits", "import sys\nsys.exit(0)")
    result = setup.call("exits", x=1)
    assert not result.ok and "SystemExit: 0" in result.content


def test_a_skill_that_loops_forever_is_killed_at_the_timeout(tmp_path: Path):
    require_bwrap()
    setup = Setup(tmp_path / "ws", timeout_s=1.5)
    drop(setup, "spin", "while True:\n    x += 1")
    start = time.monotonic()
    result = setup.call("spin", x=1)
    assert not result.ok and "skill spin ran longer than 1.5 s and was killed" in result.content
    assert time.monotonic() - start < 10


def test_a_skill_cannot_write_outside_the_workspace(setup: Setup, tmp_path: Path):
    # beside the workspace (the sandbox's /tmp is its own) and in the project's folder (not visible at all)
    targets = [tmp_path / "outside.txt", PROJECT_ROOT / f".skill-escape-{uuid.uuid4().hex}"]
    drop(setup, "escape", f"""
done = []
for target in {[str(t) for t in targets]!r}:
    try:
        with open(target, "w") as f:
            f.write("escaped")
        done.append("wrote")
    except OSError as exc:
        done.append(type(exc).__name__)
return done
""", params="x: int", returns="list[str]")
    try:
        result = setup.call("escape", x=1)
        assert result.ok, result.content
        assert [t.exists() for t in targets] == [False, False]  # nothing reached the host
        if not PROJECT_ROOT.is_relative_to("/tmp"):
            # a checkout under /tmp shows up inside the sandbox's own private /tmp (the venv is bound
            # there), so a write "succeeds" into that throw-away tmpfs; elsewhere the folder is absent
            assert result.data["value"][1] in ("FileNotFoundError", "PermissionError", "OSError")
    finally:
        targets[1].unlink(missing_ok=True)


def test_a_skill_can_write_inside_the_workspace(setup: Setup):
    drop(setup, "note", "from pathlib import Path\nPath('note.txt').write_text(text)\nreturn len(text)",
         params="text: str")
    assert setup.call("note", text="hello").content == "5"
    assert (setup.root / "note.txt").read_text() == "hello"


def test_a_skill_cannot_change_its_own_file_through_the_bound_copy(setup: Setup):
    drop(setup, "selfedit", "try:\n    open(__file__, 'a').write('# x')\n    return 'changed'\n"
                            "except OSError as exc:\n    return type(exc).__name__", returns="str")
    assert setup.call("selfedit", x=1).content in ("OSError", "PermissionError")


def test_a_skill_cannot_reach_a_port_listening_on_the_host_s_loopback(setup: Setup):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        drop(setup, "phone_home", f"""
import os
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"secret")
    return "connected"
except OSError as exc:
    return type(exc).__name__
""", returns="str")
        result = setup.call("phone_home", x=1)
        assert result.ok and result.content == "ConnectionRefusedError", result.content
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
    assert accepted == []


def test_a_skill_file_changed_after_its_check_runs_the_code_that_was_checked(setup: Setup):
    drop(setup, "stable", "return x")
    tool = next(t for t in setup.registry.tools() if t.name == "stable")
    (setup.skills / "stable.py").write_text(skill_source("stable", "return -x", params="x: int"))
    assert tool.fn(x=1).content == "1"  # the validated bytes, not the file as it is now
    (setup.skills / "stable.py").unlink()
    (setup.skills / "stable.py").symlink_to("/etc/hostname")  # nor whatever it points at now
    assert tool.fn(x=3).content == "3"
    (setup.skills / "stable.py").unlink()
    (setup.skills / "stable.py").write_text(skill_source("stable", "return -x", params="x: int"))
    assert setup.call("stable", x=2).content == "-2"  # the next step checks and offers the new file


def test_with_the_sandbox_off_a_skill_still_runs_in_a_process_of_its_own(tmp_path: Path):
    from boot.settings import Settings
    from tool.skills import SkillLoader, SkillRunner

    root = tmp_path / "ws"
    write(root / "skills" / "whoami.py", skill_source("whoami", "import os\nreturn os.getpid()", params="x: int"))
    settings = Settings(workspace=root, sandbox="off")
    loader = SkillLoader(settings, runner=SkillRunner(settings), embedder=None)
    tool = next(t for t in loader.tools() if t.name == "whoami")
    value = tool.fn(x=1).data["value"]
    assert isinstance(value, int) and value != os.getpid()


def test_a_skill_that_prints_a_lot_to_stderr_still_returns_its_value(setup: Setup):
    # more stderr than the 4 MB kept of a stream: only stderr is cut, the JSON reply is whole
    drop(setup, "noisy", "import sys\nsys.stderr.write('e' * (5 << 20))\nreturn x + 1")
    result = setup.call("noisy", x=41)
    assert result.ok and result.content == "42"


def test_a_skill_that_returns_too_much_json_is_an_error(setup: Setup):
    drop(setup, "huge", "return 'v' * (5 << 20)", returns="str")
    result = setup.call("huge", x=1)
    assert not result.ok and "skill huge returned more than 4 MB of JSON" in result.content
