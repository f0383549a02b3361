"""A day with the agent as a person lives it (issue 16): ``python cli.py`` for real, a scripted server behind it.

Each test drives the real CLI, with ``-p`` in a subprocess or the chat in a pseudo-terminal, and
looks at what the person sees, the exit code, the workspace and what reached the model.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "cli.py"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

CALC = "def add(a, b):\n    return a + b\n"
TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


@pytest.fixture
def bwrap() -> None:
    from core import sandbox

    path, reason = sandbox.bwrap_problem()
    if path is None:
        pytest.skip(f"the sandbox cannot run here: {reason}")


def tool(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def project(root: Path, *, red: bool) -> Path:
    """A small project: one test, failing before the task when ``red``."""
    (root / "calc.py").write_text(CALC.replace("a + b", "a - b") if red else CALC)
    (root / "tests").mkdir()
    (root / "tests" / "test_calc.py").write_text(TEST)
    return root


# --- 1. the judge blames only what the task broke ----------------------------------------------------

def test_a_task_that_changed_nothing_exits_0_though_a_test_was_already_red(cli, scripted, workspace, bwrap):
    # the reproduction of the issue: no .env, one failing test, a pyexe call, then the answer
    project(workspace, red=True)
    server = scripted([tool("pyexe", code="print(2 + 2)"), {"text": "4"}])
    done = cli("-p", "Compute 2+2 with the pyexe tool, then reply with just the number.", "--judge-rounds", "0",
               server=server)
    assert done.rc == 0, done.err
    assert done.out == "4\n"
    assert "4" in tool_messages(server.requests[1])[0]
    assert "checks before the change: 1 already failing: tests/test_calc.py::test_add" in done.err
    assert server.unexpected == 0


def test_a_task_that_breaks_a_passing_test_still_ends_checks_failed_with_one_line_and_the_output(
        cli, scripted, workspace, bwrap):
    project(workspace, red=False)
    broken = CALC.replace("a + b", "a * b")
    server = scripted([{"tool_calls": [{"name": "read_file", "arguments": {"path": "calc.py"}},
                                       {"name": "write_file", "arguments": {"path": "calc.py", "content": broken}}]},
                       {"text": "Rewrote add."}])
    done = cli("-p", "rewrite add", "--judge-rounds", "0", "--output-format", "json", server=server)
    assert done.rc == 1, done.err
    report = done.json()
    assert report["status"] == "checks_failed"
    assert report["reason"] == ("the checks failed once: `python -m pytest -q -x` exited with code 1 "
                                "(1 failing: tests/test_calc.py::test_add)")
    assert "stopped: the checks failed once: " in done.err
    assert "the last check's output ends:" in done.err and "assert 6 == 5" in done.err


# --- 4. the agent's state stays out of git ------------------------------------------------------------

def test_the_agents_files_stay_out_of_git_status_without_touching_the_persons_gitignore(cli, scripted, workspace,
                                                                                     bwrap):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    subprocess.run([git, "init", "-q", str(workspace)], check=True)
    skills = workspace / "skills"
    (skills / ".versions").mkdir(parents=True)
    (skills / ".versions" / "slug@1.py").write_text("x = 1\n")
    (skills / ".manifest.lock").write_text("")
    (skills / "slug.py").write_text("x = 1\n")  # a promoted skill is the person's to keep
    server = scripted([tool("shell", command="echo hi > hello.txt"), {"text": "Wrote hello.txt."},
                       {"text": "Nothing else."}])
    assert cli("-p", "write hello.txt", server=server).rc == 0
    assert cli("-p", "anything else?", server=server).rc == 0  # a second start adds nothing twice
    status = subprocess.run([git, "status", "--porcelain", "--untracked-files=all"], cwd=workspace,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert sorted(status) == ["?? hello.txt", "?? skills/slug.py"]
    assert (workspace / ".agent" / "sessions.db").exists()  # there, and ignored
    exclude = (workspace / ".git" / "info" / "exclude").read_text()
    assert exclude.count("/.agent/") == 1 and exclude.count("# local-coder:") == 1
    assert not (workspace / ".gitignore").exists()
    assert not (workspace / ".env").exists()


# --- 5. labels that say what happened ------------------------------------------------------------------

def test_a_read_only_file_system_error_reaches_the_person_and_the_model_with_what_it_means(cli, scripted, bwrap):
    server = scripted([tool("shell", command="touch /usr/forbidden"), {"text": "Cannot write there."}])
    done = cli("-p", "create /usr/forbidden", server=server)
    assert done.rc == 0, done.err
    assert "✗ exit 1: touch: cannot touch '/usr/forbidden': Read-only file system" in done.err
    result = tool_messages(server.requests[1])[0]
    assert "Read-only file system" in result
    assert "read-only by design, and nothing (sudo, remount, chmod) changes that" in result


def test_repeated_failing_calls_are_named_as_such_not_as_malformed(cli, scripted):
    call = tool("read_file", path="missing.txt")
    server = scripted([call, call, call])
    done = cli("-p", "read missing.txt", "--output-format", "json", server=server)
    assert done.rc == 1
    report = done.json()
    assert report["status"] == "format_errors"
    assert report["reason"].startswith("the model made the same failing call 3 times: read_file")
    assert "malformed" not in done.err
    assert "stopped: the model made the same failing call 3 times: read_file" in done.err


def test_a_skill_call_shows_the_value_it_returned(cli, scripted, workspace, bwrap):
    (workspace / "skills").mkdir()
    (workspace / "skills" / "slugify.py").write_text(
        'def slugify(text: str) -> str:\n    """Make a URL slug of a title.\n\n    Args:\n        text: the title\n'
        '    """\n    return "-".join(text.lower().split())\n')
    server = scripted([tool("slugify", text="Hello Big World"), {"text": "hello-big-world"}])
    done = cli("-p", "slugify the title Hello Big World", server=server)
    assert done.rc == 0, done.err
    assert "✓ slugify returned 'hello-big-world'" in done.err


def test_sessions_say_when_a_turn_ran_nothing(chat, scripted, workspace):
    server = scripted([{"text": "Hello!"}, tool("list_files", path="."), {"text": "Empty."}])
    term = chat(server)
    term.prompt()
    term.send("hi")
    term.wait_for("Hello!")
    term.prompt()
    term.send("/sessions")
    term.wait_for("answered, nothing run")
    term.prompt()
    term.send("list the files")
    term.wait_for("Empty.")
    term.prompt()
    term.send("/sessions")
    term.wait_for("done, 1 tool call")
    term.prompt()
    term.send("/quit")
    assert term.exit_status() == 0


# --- 6. where the work happens --------------------------------------------------------------------------

@pytest.fixture
def bare_cli(make_env):
    """``bare_cli(args, cwd, server)``: ``cli.py`` without the fixtures' --workspace, as the person's setup gives it."""
    if not VENV_PYTHON.exists():
        pytest.skip(f"the project's venv {VENV_PYTHON} is missing")

    def run(args: list[str], cwd: Path, server: Any) -> subprocess.CompletedProcess[str]:
        argv = [str(VENV_PYTHON), str(CLI), "--model-url", server.base_url, "--model", server.model, *args]
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=make_env(), timeout=90)

    return run


def test_from_a_project_folder_it_says_where_it_works_and_how_to_work_here(scripted, tmp_path, bare_cli):
    mine = tmp_path / "myproject"
    (mine / ".git").mkdir(parents=True)
    server = scripted([{"text": "The workspace is empty."}, {"text": "Still empty."}])
    done = bare_cli(["-p", "List the files"], mine, server)
    assert done.returncode == 0, done.stderr
    assert "note: creating the workspace ./workspace" in done.stderr
    assert ("note: the agent works in ./workspace, not in this project folder; to work on this project, give "
            "--workspace . (or set AGENT_WORKSPACE)") in done.stderr
    assert (mine / "workspace").is_dir()
    # said on every start from there, not only the first
    again = bare_cli(["-p", "List the files"], mine, server)
    assert "not in this project folder" in again.stderr and "creating" not in again.stderr


def test_a_missing_workspace_is_never_created_silently(scripted, tmp_path, bare_cli):
    server = scripted([{"text": "ok"}])
    done = bare_cli(["--workspace", "wrkspace", "-p", "hi"], tmp_path, server)
    assert done.returncode == 0, done.stderr
    assert ("note: the workspace ./wrkspace does not exist: creating it (check the path if you meant another "
            "folder)") in done.stderr
    assert (tmp_path / "wrkspace").is_dir()


# --- 7. smaller things ---------------------------------------------------------------------------------

def test_version_a_mistyped_flag_in_one_line_and_a_help_without_server_settings(cli):
    version = cli("--version")
    assert version.rc == 0 and version.out.startswith("local-coder 0.")
    typo = cli("--max-stpes", "5", "-p", "hi")
    assert typo.rc == 2
    assert typo.err == "error: unknown flag --max-stpes (did you mean --max-steps?); python cli.py --help lists them\n"
    server_flag = cli("--vram-gb", "6", "-p", "hi")
    assert server_flag.rc == 2 and server_flag.err.count("\n") == 1
    assert "--vram-gb is a setting of the model server, not of the agent" in server_flag.err
    shown = cli("--help").out
    assert "--max-steps" in shown and "--workspace" in shown
    for server_only in ("--vram-gb", "--port", "--n-gpu-layers", "--queue-size", "--model-path"):
        assert server_only not in shown


def test_one_ctrl_c_at_the_empty_prompt_asks_for_a_second(chat, scripted):
    server = scripted([{"text": "still here"}])
    term = chat(server)
    term.prompt()
    term.child.sendintr()
    term.wait_for("Ctrl-C again to leave")
    term.prompt()
    term.send("are you there?")  # the chat goes on
    term.wait_for("still here")
    term.prompt()
    term.child.sendintr()
    term.wait_for("Ctrl-C again to leave")
    term.child.sendintr()
    assert term.exit_status() == 0


def test_model_does_not_offer_the_embedding_model(chat, scripted):
    server = scripted([], also_lists=["qwen2.5-coder-1.5b-instruct", "all-MiniLM-L6-v2"])
    term = chat(server)
    term.prompt()
    term.send("/model")
    shown = term.wait_for("the server also offers: qwen2.5-coder-1.5b-instruct")
    assert "MiniLM" not in shown
    term.prompt()
    term.send("/quit")
    assert term.exit_status() == 0
    assert "MiniLM" not in term.text


# --- 3. long prompts: progress, a warning first, a clean redraw --------------------------------------------

def progress_reply(text: str, total: int, steps: int = 4, speed_tps: float = 20.0) -> dict[str, Any]:
    """A reply preceded by llama-server's prompt_progress chunks at ``speed_tps`` tokens a second."""
    rows = [[total * k // steps, total, 0, total * k // steps / speed_tps * 1000] for k in range(1, steps + 1)]
    return {"text": text, "progress": rows, "progress_delay_s": 0.3}


def test_the_chat_shows_prompt_progress_and_warns_before_a_paste_that_takes_minutes(chat, scripted):
    server = scripted([progress_reply("Read it all.", 4096)], engine="llama-server")
    term = chat(server)
    term.prompt()
    term.send("summarise the log")
    term.wait_for("processing prompt 2,048/4,096 tokens (50%)")
    term.wait_for("Read it all.")
    term.prompt()
    assert server.requests[0]["return_progress"] is True
    # 20 tokens/s measured: a paste of ~5,000 tokens takes minutes, so the chat asks first
    term.send("x " * 8000)
    asked = " ".join(term.wait_for("Send it? [Y/n]").split())
    assert ("This message is about 4,999 tokens: at the 20 tokens/s the server has read prompts so far, it will "
            "take about 4 minutes before the answer starts.") in asked
    term.send("n")
    term.wait_for("not sent")
    term.prompt()
    term.send("/quit")
    assert term.exit_status() == 0
    assert len(server.requests) == 1  # the paste never went


def test_other_servers_are_never_sent_the_progress_field(cli, scripted):
    server = scripted([{"text": "ok"}])  # neither this project's server nor llama-server
    assert cli("-p", "hi", server=server).rc == 0
    assert "return_progress" not in server.requests[0]
    assert server.requests[0]["stream"] is True


def test_the_live_answer_never_outgrows_the_terminal_so_nothing_is_left_drawn_twice():
    # long lines wrap: a live region counted in lines, not screen rows, outgrew the terminal, and
    # what scrolled out of it could not be erased; in rows, the newest text stays in view
    import io

    from rich.console import Console

    from boot.screen import ChatScreen, fold_tail

    console = Console(file=io.StringIO(), width=40, height=12, force_terminal=True)
    screen = ChatScreen(console)
    screen.text("\n\n".join(f"line {i:02d} " + "word " * 20 for i in range(30)))
    rendered = console.render_lines(screen.view(), console.options, pad=False)
    assert len(rendered) <= 12 - 4
    assert "line 29" in "".join(seg.text for line in rendered for seg in line)
    assert fold_tail("a" * 100, 40, 2) == "a" * 80  # a line longer than the room keeps its end
    assert fold_tail("one\ntwo\nthree", 40, 2) == "two\nthree"
