"""``python cli.py -p …``: a real subprocess against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import time

import pytest


def write_call(path: str, content: str, fmt: str) -> dict:
    return {"text": "I will write it.", "format": fmt,
            "tool_calls": [{"name": "write_file", "arguments": {"path": path, "content": content}}]}


def user_texts(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "user"]


@pytest.mark.parametrize("fmt", ["native", "tool_call", "fence"])
def test_json_run_creates_the_file_and_reports_success_in_each_reply_format(cli, scripted, workspace, fmt):
    server = scripted([write_call("hello.py", "print('hi')\n", fmt), {"text": "Created hello.py."}])
    done = cli("-p", "create hello.py that prints hi", "--output-format", "json", server=server)
    assert done.rc == 0, done.err
    assert (workspace / "hello.py").read_text() == "print('hi')\n"
    out = done.json()
    assert (out["status"], out["answer"], out["steps"]) == ("done", "Created hello.py.", 2)
    assert [(c["name"], c["arguments"], c["ok"]) for c in out["tool_calls"]] == [
        ("write_file", {"path": "hello.py", "content": "print('hi')\n"}, True)]
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"] > 0
    assert set(out) == {"status", "answer", "reason", "session_id", "steps", "elapsed_s", "tool_calls", "usage"}
    assert done.out.count("\n") == 1  # exactly one JSON object, nothing else on stdout
    assert server.unexpected == 0


@pytest.mark.parametrize("fmt", ["native", "tool_call", "fence"])
def test_text_run_streams_the_answer_to_stdout_and_tool_lines_to_stderr(cli, scripted, workspace, fmt):
    call = write_call("a.txt", "x", fmt)
    call["text"] += "\n"  # a fenced call is held back when it starts a line
    server = scripted([call, {"text": "All **done**: a.txt written."}])
    done = cli("-p", "write a.txt", server=server)
    assert done.rc == 0, done.err
    assert done.out == "I will write it.\nAll **done**: a.txt written.\n"
    tool_lines = [ln for ln in done.err.splitlines() if ln.startswith(("→", "  ✓", "  ✗"))]
    assert tool_lines[0] == "→ write_file(path='a.txt', content='x')"
    assert tool_lines[1].startswith("  ✓ ")
    assert "\r" not in done.err  # no spinner when stderr is not a terminal


def test_quiet_prints_only_the_final_answer(cli, scripted):
    server = scripted([{"text": "Just the answer."}])
    done = cli("-p", "answer", "--quiet", server=server)
    assert (done.rc, done.out, done.err) == (0, "Just the answer.\n", "")


def test_prompt_dash_reads_the_task_from_stdin(cli, scripted):
    server = scripted([{"text": "Summary: short."}])
    done = cli("-p", "-", stdin="summarise notes.md\nplease\n", server=server)
    assert (done.rc, done.out) == (0, "Summary: short.\n")
    assert user_texts(server.requests[0]) == ["summarise notes.md\nplease"]


def test_without_p_a_piped_stdin_is_the_task_and_nothing_waits_for_input(cli, scripted):
    server = scripted([{"text": "ok"}])
    done = cli(stdin="list the files\n", server=server, timeout=60)
    assert (done.rc, done.out) == (0, "ok\n")
    assert user_texts(server.requests[0]) == ["list the files"]


def test_empty_stdin_is_a_usage_error(cli, scripted):
    server = scripted([])
    done = cli(stdin="", server=server)
    assert done.rc == 2
    assert done.err.strip().splitlines() == ["error: no task: stdin was empty (pipe the task in, or give it with -p \"…\")"]


def test_resume_continues_the_last_session_with_its_history(cli, scripted):
    server = scripted([{"text": "The answer is 4."}, {"text": "And doubled, 8."}])
    first = cli("-p", "what is 2+2?", "--output-format", "json", server=server)
    second = cli("-p", "double it", "--resume", "--output-format", "json", server=server)
    assert (first.rc, second.rc) == (0, 0)
    assert first.json()["session_id"] == second.json()["session_id"]
    sent = [(m["role"], m["content"]) for m in server.requests[1]["messages"] if m["role"] != "system"]
    assert sent == [("user", "what is 2+2?"), ("assistant", "The answer is 4."), ("user", "double it")]


def test_session_flag_takes_an_id_prefix_and_an_unknown_id_is_one_line(cli, scripted):
    server = scripted([{"text": "first"}, {"text": "second"}, {"text": "third"}])
    one = cli("-p", "task one", "--output-format", "json", server=server).json()["session_id"]
    cli("-p", "task two", "--output-format", "json", server=server)
    back = cli("-p", "task three", "--session", one[:6], "--output-format", "json", server=server)
    assert back.json()["session_id"] == one
    assert user_texts(server.requests[2]) == ["task one", "task three"]
    missing = cli("-p", "x", "--session", "nosuchsession", server=server)
    assert missing.rc == 2
    assert missing.err.strip().splitlines() == [
        "error: no session 'nosuchsession' in this workspace (list them with /sessions in the chat)"]


def test_a_server_that_does_not_answer_is_one_line_with_the_url_and_how_to_start_one(cli):
    done = cli("-p", "anything", "--model-url", "http://127.0.0.1:9/v1", timeout=30)
    assert done.rc == 2
    assert done.out == ""
    assert done.err.strip().splitlines() == [
        "error: no model server answers at http://127.0.0.1:9/v1 (start one with `bash runsv.sh`, or give "
        "--model-url (AGENT_MODEL_URL) for another OpenAI-compatible engine)"]


def test_a_piped_task_also_stops_with_one_line_when_no_server_answers(cli):
    # stdin is not a terminal, so this would be a task; --model-url is checked first either way
    done = cli("--model-url", "http://127.0.0.1:9/v1", stdin="hello", timeout=30)
    assert done.rc == 2
    assert len(done.err.strip().splitlines()) == 1 and "http://127.0.0.1:9/v1" in done.err


@pytest.mark.parametrize("flag, env, line", [
    (("--max-steps", "zero"), {}, "error: bad setting AGENT_MAX_STEPS (got 'zero'): Input should be a valid integer, "
                                  "unable to parse string as an integer"),
    ((), {"AGENT_TEMPERATURE": "9"}, "error: bad setting AGENT_TEMPERATURE (got '9'): Input should be less than or "
                                     "equal to 2"),
    (("--model-url", "localhost:8000"), {}, "error: bad setting AGENT_MODEL_URL (got 'localhost:8000'): Value error, "
                                            "must start with http:// or https://"),
])
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(cli, make_env, flag, env, line):
    done = cli("-p", "x", *flag, env=make_env(**env))
    assert (done.rc, done.out) == (2, "")
    assert done.err.strip().splitlines() == [line]


def test_flags_override_the_environment(cli, scripted, make_env):
    server = scripted([{"text": "fine"}])
    done = cli("-p", "x", "--max-steps", "3", "--output-format", "json", server=server,
               env=make_env(AGENT_MAX_STEPS="oops"))
    assert done.rc == 0, done.err


def test_unknown_subcommand_says_how_to_give_a_task(cli):
    from boot.cli import available_subcommands

    done = cli("fix", "the", "bug")
    assert done.rc == 2
    assert done.err.strip().splitlines() == [
        f"error: unknown command 'fix' (commands: {', '.join(available_subcommands())}); "
        "to give the agent a task, use -p \"fix the bug\""]


def test_a_spent_step_budget_exits_1_with_the_reason(cli, scripted):
    server = scripted([{"tool_calls": [{"name": "no_such_tool", "arguments": {}}]}])
    done = cli("-p", "loop", "--max-steps", "1", "--output-format", "json", server=server)
    assert done.rc == 1
    out = done.json()
    assert (out["status"], out["steps"]) == ("budget_exceeded", 1)
    assert out["reason"].startswith("step budget spent: 1 model calls")
    assert "stopped: budget spent: step budget spent" in done.err


def test_ctrl_c_interrupts_the_run_exits_130_and_reports_interrupted(cli_argv, make_env, scripted, tmp_path):
    server = scripted([{"text": "Thinking about it at length", "stall_after": 10}])
    argv = cli_argv("-p", "long task", "--output-format", "json", server=server)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, cwd=tmp_path, env=make_env())
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.requests, "the CLI never asked the model"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert result["status"] == "interrupted"
    assert server.client_left.wait(10)  # the CLI hung up, so the server stops generating


def test_system_python_reexecutes_into_the_venv(cli, scripted, system_python):
    python = system_python
    # -S: no site-packages, so the system Python itself cannot import pydantic; only the venv can
    assert subprocess.run([str(python), "-S", "-c", "import pydantic"], capture_output=True).returncode != 0
    server = scripted([{"text": "from the venv"}])
    done = cli("-p", "x", server=server, python=python, python_flags=("-S",))
    assert (done.rc, done.out) == (0, "from the venv\n"), done.err


def test_without_a_venv_it_says_to_install_first(tmp_path, system_python, cli_file, make_env):
    alone = tmp_path / "checkout"
    alone.mkdir()
    shutil.copy(cli_file, alone / "cli.py")
    proc = subprocess.run([str(system_python), str(alone / "cli.py"), "-p", "x"], capture_output=True, text=True,
                          env=make_env(), timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: the project's environment {alone / '.venv'} does not exist yet; run `bash runsv.sh` "
        "(or `bash smoke_test.sh`) first to install it"]


@pytest.mark.parametrize("name", ["memory", "skills"])
def test_subcommands_reach_their_module_and_its_output(cli, name):
    done = cli(name, "--help")
    assert done.rc == 0, done.err
    assert done.out.startswith(f"usage: cli.py {name}")
    listed = cli(name, "list", "--json")
    assert listed.rc == 0, listed.err
    json.loads(listed.out)  # the module's own JSON, nothing of the CLI's mixed in


def test_sandbox_off_warns_on_every_start_even_when_quiet(cli, scripted):
    server = scripted([{"text": "a"}, {"text": "b"}])
    for flags in ((), ("--quiet",)):
        done = cli("-p", "x", "--sandbox", "off", *flags, server=server)
        assert done.rc == 0, done.err
        assert done.err.splitlines()[0].startswith("WARNING: the sandbox is OFF (AGENT_SANDBOX=off)")


def test_gemini_runs_the_same_agent_on_the_gemini_api_only_when_asked(cli, workspace):
    gemini = pytest.importorskip("gate.scripted_gemini")
    replies = [{"function_calls": [{"name": "write_file", "args": {"path": "g.txt", "content": "from gemini"}}]},
               {"text": "Wrote g.txt."}]
    with gemini.ScriptedGemini(replies) as server:
        done = cli("-p", "write g.txt", "--gemini", "--gemini-base-url", server.base_url,
                   "--gemini-api-key", "test-key", "--model-url", "http://127.0.0.1:9/v1", "--output-format", "json")
    assert done.rc == 0, done.err
    assert (done.json()["status"], done.json()["answer"]) == ("done", "Wrote g.txt.")
    assert (workspace / "g.txt").read_text() == "from gemini"
    assert ("note: this task runs on Google Gemini (gemini-2.5-flash); the session's content (messages, files read, "
            "tool output) will be sent to Google") in done.err
    assert server.unexpected == 0


def test_gemini_without_a_key_is_one_line(cli):
    done = cli("-p", "x", "--gemini")
    assert done.rc == 2
    assert done.err.strip().splitlines() == [
        "error: GEMINI_API_KEY is not set; Gemini needs an API key (make one at https://aistudio.google.com/apikey "
        "and put GEMINI_API_KEY=… in .env)"]


def test_a_reader_that_stops_early_does_not_break_the_run(cli_argv, scripted, make_env, tmp_path):
    server = scripted([{"text": "line\n" * 5000}], chunk_chars=50)
    command = " ".join(shlex.quote(a) for a in cli_argv("-p", "print many lines", server=server))
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {command} | head -n 2"], capture_output=True,
                          text=True, cwd=tmp_path, env=make_env(), timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "line\nline\n")
    assert "Error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
