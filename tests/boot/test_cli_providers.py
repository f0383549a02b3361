"""The chat's /plan, /skills, /compact, /gemini and /local, and the consent before a session goes to Gemini.

Real subprocesses: the chat in a pseudo-terminal (pexpect), ``-p`` with pipes; the local model is
:mod:`gate.scripted_server`, Gemini is :mod:`gate.scripted_gemini`, both on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from conftest import gemini_env  # type: ignore[import-not-found]  (tests/boot/conftest.py)

pytest.importorskip("pexpect")

OVERFLOW = {"status": 400, "code": "context_length_exceeded",
            "message": "This model's maximum context length is 8192 tokens; your request has 9000"}
PLAN_CALL = {"text": "Planning.", "tool_calls": [
    {"name": "plan", "arguments": {"action": "set", "items": ["read the code", "write the fix"]}}]}

SHOUT = 'def shout(text: str) -> str:\n    """Upper-case a text.\n\n    Args:\n        text: what to shout\n    """\n' \
        '    return text.upper()\n'


def gemini_texts(request: dict[str, Any]) -> list[str]:
    """The text parts of a Gemini request's contents, in order."""
    return [part["text"] for content in request["body"]["contents"] for part in content["parts"] if "text" in part]


def test_plan_skills_and_compact_in_the_chat_and_gemini_without_a_key_changes_nothing(chat, scripted, workspace):
    skills = workspace / "skills"
    skills.mkdir()
    (skills / "shout.py").write_text(SHOUT)
    server = scripted([PLAN_CALL, {"text": "Planned."}, {"text": "Second answer."},
                       {"text": "Summary: the person asked for a plan and a second answer."}, OVERFLOW, OVERFLOW])
    term = chat(server, AGENT_TOOLSET="all")  # the plan tool whatever the task says
    term.prompt()
    term.send("/plan")
    term.wait_for("No session yet")
    term.prompt()

    term.send("fix the bug")
    term.wait_for("→ plan(action='set'")
    term.wait_for("Planned.")
    term.wait_for("local scripted-model · context")  # the status line names the provider and model
    term.prompt()
    term.send("/plan")
    shown = term.wait_for("write the fix")
    assert re.search(r"Plan \(\w+, 0 of 2 done\)\s+1\. ○ read the code\s+2\. ○ write the fix", shown), shown
    term.prompt()

    term.send("/skills")
    shown = term.wait_for("Upper-case a text.")
    assert "shout" in shown and "ok" in shown
    term.prompt()
    term.send("/skills show shout")
    term.wait_for("return text.upper()")
    term.prompt()

    term.send("and then?")
    term.wait_for("Second answer.")
    term.prompt()
    term.send("/compact")
    term.wait_for("context compacted: 4 older messages summarised by the model")
    term.wait_for("compacted: 4 older messages are now one summary")
    term.prompt()
    assert "fix the bug" in json.dumps(server.requests[3]["messages"])  # the summary request saw them

    term.send("/gemini")
    term.wait_for("error: GEMINI_API_KEY is not set")
    term.prompt()
    term.send("a task too big")
    term.wait_for("This task no longer fits the local model's context. To continue it on Google Gemini, set")
    term.wait_for("GEMINI_API_KEY")
    term.prompt()
    term.send("/cost")
    term.wait_for("now on local: scripted-model")
    term.prompt()
    term.send("/quit")
    assert term.exit_status() == 0
    assert server.unexpected == 0


def test_gemini_continues_the_same_session_and_local_takes_it_back_with_its_tool_calls(chat, scripted, gemini):
    server = scripted([{"text": "Local answer."}, {"text": "Back home."}])
    google = gemini([{"function_calls": [{"name": "plan", "args": {"action": "set", "items": ["one step"]}}]},
                     {"text": "Gemini answer."}])
    term = chat(server, AGENT_TOOLSET="all", **gemini_env(google))  # the plan tool whatever the task says
    term.prompt()
    term.send("first task")
    term.wait_for("Local answer.")
    term.prompt()

    term.send("/gemini")
    term.wait_for("now on Google Gemini: gemini-test")
    term.wait_for("will be sent to Google")
    term.prompt()
    term.send("second task")
    term.wait_for("→ plan(action='set', items=[\"one step\"])")
    term.wait_for("Gemini answer.")
    term.wait_for("Gemini gemini-test · context")
    term.prompt()
    assert gemini_texts(google.requests[0]) == ["first task", "Local answer.", "second task"]

    term.send("/local")
    term.wait_for("now on local: scripted-model")
    term.prompt()
    term.send("third task")
    term.wait_for("Back home.")
    term.prompt()
    messages = server.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["system", "system", "user", "assistant", "user", "assistant", "tool",
                                             "assistant", "user"]
    call = messages[5]["tool_calls"][0]
    assert call["function"]["name"] == "plan"
    assert json.loads(call["function"]["arguments"]) == {"action": "set", "items": ["one step"]}
    assert messages[6]["tool_call_id"] == call["id"]
    assert (messages[7]["content"], messages[8]["content"]) == ("Gemini answer.", "third task")

    term.send("/cost")
    term.wait_for("Google Gemini gemini-test (sent to Google, billed by Google): ")
    term.prompt()
    term.send("/quit")
    assert term.exit_status() == 0
    assert (server.unexpected, google.unexpected) == (0, 0)


def test_a_task_that_outgrows_the_local_context_goes_to_gemini_only_after_yes(chat, scripted, gemini):
    server = scripted([OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW])
    google = gemini([{"text": "Continued on Gemini."}])
    term = chat(server, **gemini_env(google))
    term.prompt()
    term.send("a big task")
    term.wait_for("This task no longer fits the local model's context.")
    shown = " ".join(term.wait_for("[yes/no]").split())
    assert shown.endswith("Continue this session on Google Gemini (gemini-test)? The session's content (messages, "
                          "files read, tool output) will be sent to Google. [yes/no]"), shown
    term.send("no")
    term.wait_for("Staying on the local model")
    term.prompt()
    assert google.requests == []

    term.send("try it again")
    term.wait_for("[yes/no]")
    term.send("yes")
    term.wait_for("now on Google Gemini: gemini-test")
    term.wait_for("Continued on Gemini.")
    term.prompt()
    texts = gemini_texts(google.requests[0])
    assert texts[:2] == ["a big task", "try it again"]
    assert texts[-1].startswith("Continue the task you were working on")
    term.send("/quit")
    assert term.exit_status() == 0
    assert (server.unexpected, google.unexpected) == (0, 0)


def test_with_fallback_gemini_the_chat_moves_the_session_without_asking_and_says_so(chat, scripted, gemini):
    server = scripted([OVERFLOW, OVERFLOW])
    google = gemini([{"text": "Went on with Gemini."}])
    term = chat(server, AGENT_FALLBACK="gemini", **gemini_env(google))
    term.prompt()
    term.send("a big task")
    term.wait_for("context: continuing this session on Google Gemini, as AGENT_FALLBACK=gemini")
    term.wait_for("now on Google Gemini: gemini-test")
    term.wait_for("will be sent to Google")
    term.wait_for("Went on with Gemini.")
    term.prompt()
    assert "[yes/no]" not in term.text
    assert gemini_texts(google.requests[0])[0] == "a big task"
    term.send("/quit")
    assert term.exit_status() == 0


def test_p_with_fallback_ask_and_no_terminal_says_how_to_continue_and_sends_nothing(cli, scripted, gemini, make_env):
    server = scripted([OVERFLOW, OVERFLOW])
    google = gemini([])
    done = cli("-p", "a big task", server=server, env=make_env(**gemini_env(google)))
    assert done.rc == 1, done.err
    assert "python cli.py --resume --gemini -p \"continue\"" in done.err
    assert "sent to Google" in done.err
    assert google.requests == []


def test_p_on_a_terminal_asks_and_yes_continues_on_gemini(terminal, cli_argv, make_env, scripted, gemini, tmp_path):
    server = scripted([OVERFLOW, OVERFLOW])
    google = gemini([{"text": "Done there."}])
    term = terminal(cli_argv("-p", "a big task", server=server),
                    make_env(TERM="xterm-256color", **gemini_env(google)), str(tmp_path))
    term.wait_for("Continue this session on Google Gemini (gemini-test)?")
    term.wait_for("[yes/no]")
    assert google.requests == []
    term.send("yes")
    term.wait_for("Done there.")
    assert term.exit_status() == 0
    assert gemini_texts(google.requests[0])[0] == "a big task"


def test_p_with_fallback_gemini_continues_there_and_says_so(cli, scripted, gemini, make_env):
    server = scripted([OVERFLOW, OVERFLOW])
    google = gemini([{"text": "Finished on Gemini."}])
    done = cli("-p", "a big task", "--output-format", "json", server=server,
               env=make_env(AGENT_FALLBACK="gemini", **gemini_env(google)))
    assert done.rc == 0, done.err
    assert "continuing this session on Google Gemini (gemini-test) as AGENT_FALLBACK=gemini says" in done.err
    out = done.json()
    assert (out["status"], out["answer"], out["steps"]) == ("done", "Finished on Gemini.", 2)  # one local step, one on Gemini
    assert gemini_texts(google.requests[0])[0] == "a big task"


def test_p_without_a_gemini_key_says_how_to_set_it_and_never_offers_with_fallback_never(cli, scripted, make_env):
    server = scripted([OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW])
    done = cli("-p", "a big task", server=server)
    assert done.rc == 1
    assert "set GEMINI_API_KEY (https://aistudio.google.com/apikey)" in done.err
    never = cli("-p", "a big task", server=server,
                env=make_env(AGENT_FALLBACK="never", GEMINI_API_KEY="k", GEMINI_BASE_URL="http://127.0.0.1:9/v1beta"))
    assert never.rc == 1
    assert "Gemini" not in never.err and "context" in never.err


def test_the_skills_subcommand_runs_the_skills_commands(cli, workspace):
    (workspace / "skills").mkdir()
    (workspace / "skills" / "shout.py").write_text(SHOUT)
    done = cli("skills", "list", "--json")
    assert done.rc == 0, done.err
    assert [(row["name"], row["status"]) for row in json.loads(done.out)] == [("shout", "ok")]
