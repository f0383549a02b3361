"""The interactive chat for real: ``python cli.py`` in a pseudo-terminal (pexpect), a scripted server behind it."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("pexpect")


def test_a_chat_streams_answers_shows_tools_lists_sessions_survives_ctrl_c_and_quits(chat, scripted, workspace):
    server = scripted([
        {"text": "Writing it.", "tool_calls": [{"name": "write_file", "arguments": {"path": "a.txt", "content": "hi"}}]},
        {"text": "## Done\n\nI wrote **a.txt**."},
        {"text": "This will take a long while", "stall_after": 12},
        {"text": "Second answer after the interrupt."},
    ], chunk_chars=2)
    term = chat(server)
    term.wait_for("scripted-model")
    term.prompt()

    term.send("write a.txt saying hi")
    term.wait_for("Writing it.")
    term.wait_for("→ write_file(path='a.txt', content='hi')")
    term.wait_for("✓ created a.txt")
    term.wait_for("I wrote a.txt.")  # the markdown rendered: no ** left
    status = term.wait_for("out")
    assert re.search(r"scripted-model · context \S+/8\.2k \(\d+%\) · session \S+ in / \S+ out", status), status
    assert (workspace / "a.txt").read_text() == "hi"
    term.prompt()

    term.send("/help")
    for command in ("/sessions", "/resume [ID]", "/model [ID]", "/clear", "/cost", "/memory [ARGS]", "/quit"):
        term.wait_for(command)
    term.prompt()

    term.send("/sessions")
    term.wait_for("write a.txt saying hi")
    term.prompt()

    term.send("take your time")
    term.wait_for("This will ta")  # streamed, then the server stalls mid-answer
    term.child.sendintr()
    term.wait_for("interrupting")
    term.wait_for("interrupted while the model was answering")
    assert server.client_left.wait(10)
    term.prompt()

    term.send("try again")
    term.wait_for("Second answer after the interrupt.")
    term.prompt()
    # the same session went on: the last request carries the first turn and the interrupted one
    users = [m["content"] for m in server.requests[3]["messages"] if m["role"] == "user"]
    assert users == ["write a.txt saying hi", "take your time", "try again"]

    term.send("/quit")
    assert term.exit_status() == 0
    assert server.unexpected == 0


def test_ctrl_c_twice_during_a_turn_leaves_with_130(chat, scripted):
    server = scripted([{"text": "Working on something big", "stall_after": 8}])
    term = chat(server)
    term.prompt()
    term.send("big task")
    term.wait_for("Working ")
    term.child.sendintr()
    term.wait_for("interrupting")
    term.child.sendintr()
    assert term.exit_status() == 130


def test_ctrl_d_at_the_empty_prompt_leaves_and_history_is_kept(chat, scripted, workspace):
    server = scripted([{"text": "ok"}])
    term = chat(server)
    term.prompt()
    term.send("remember this line")
    term.wait_for("ok")
    term.prompt()
    term.child.sendeof()
    assert term.exit_status() == 0
    assert "remember this line" in (workspace / ".agent" / "history").read_text()


def test_unknown_slash_command_is_one_line_and_the_chat_goes_on(chat, scripted):
    server = scripted([])
    term = chat(server)
    term.prompt()
    term.send("/sesions")
    term.wait_for("unknown command /sesions (did you mean /sessions?); /help lists them")
    term.prompt()
    term.send("/quit")
    assert term.exit_status() == 0


def test_resume_shows_where_the_session_left_off_and_clear_and_resume_switch_sessions(chat, cli, scripted):
    server = scripted([{"text": "The capital is Paris."}, {"text": "Fresh start."}, {"text": "Still Paris."},
                       {"text": "From the other model."}])
    first = cli("-p", "capital of France?", "--output-format", "json", server=server).json()["session_id"]

    term = chat(server, "--resume")
    term.wait_for(f"Resumed session {first}: capital of France?")
    term.wait_for("capital of France?")
    term.wait_for("The capital is Paris.")
    term.prompt()

    term.send("/clear")
    term.wait_for("New session")
    term.prompt()
    term.send("something else")
    term.wait_for("Fresh start.")
    term.prompt()
    assert [m["role"] for m in server.requests[1]["messages"]] == ["system", "system", "user"]

    term.send(f"/resume {first[:5]}")
    term.wait_for(f"Resumed session {first}")
    term.prompt()
    term.send("and again?")
    term.wait_for("Still Paris.")
    term.prompt()
    users = [m["content"] for m in server.requests[2]["messages"] if m["role"] == "user"]
    assert users == ["capital of France?", "and again?"]

    term.send("/model")
    term.wait_for("model scripted-model (at " + server.base_url + ")")
    term.wait_for("context window 8.2k tokens")
    term.prompt()
    term.send("/cost")
    term.wait_for("this chat: ")
    term.wait_for("over 2 turn(s), 0 tool call(s)")
    term.prompt()
    term.send("/model other-model")
    term.wait_for("model is now other-model")
    term.wait_for("note: the server lists scripted-model; it may not know 'other-model'")
    term.prompt()
    term.send("who are you?")
    term.wait_for("From the other model.")
    term.prompt()
    assert server.requests[3]["model"] == "other-model"
    users = [m["content"] for m in server.requests[3]["messages"] if m["role"] == "user"]
    assert users == ["capital of France?", "and again?", "who are you?"]  # the session carried over
    term.send("/memory list")
    term.wait_for("memories yet")  # the memory commands answered inside the chat
    term.prompt()
    term.send("/quit")
    assert term.exit_status() == 0


def test_the_chat_does_not_start_without_a_server_and_says_so_in_one_line(terminal, make_env, cli_argv, tmp_path):
    argv = cli_argv("--model-url", "http://127.0.0.1:9/v1")
    term = terminal(argv, make_env(TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1"), str(tmp_path))
    term.wait_for("error: no model server answers at http://127.0.0.1:9/v1 (start one with `bash runsv.sh`")
    assert term.exit_status() == 2
    assert [ln for ln in term.text.splitlines() if ln.strip()] == [
        "error: no model server answers at http://127.0.0.1:9/v1 (start one with `bash runsv.sh`, or give "
        "--model-url (AGENT_MODEL_URL) for another OpenAI-compatible engine)"]


def test_p_on_a_terminal_shows_a_spinner_while_the_model_thinks_and_ctrl_c_ends_it(cli_argv, make_env, scripted,
                                                                                   terminal, tmp_path):
    server = scripted([{"text": "never arrives", "stall_after": 0}])
    argv = cli_argv("-p", "think hard", server=server)
    term = terminal(argv, make_env(TERM="xterm-256color"), str(tmp_path))
    term.wait_for("thinking 0.")  # the spinner counts the seconds
    term.wait_for("thinking 1.")
    term.child.sendintr()
    term.wait_for("interrupting… (Ctrl-C again to leave at once)")
    term.wait_for("interrupted")
    assert term.exit_status() == 130
    assert server.client_left.wait(10)
