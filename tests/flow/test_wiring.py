"""build_agent: fresh parts from settings; and the loop over the real HTTP gateway and a stand-in server."""

from __future__ import annotations

import json

import pytest

from boot.settings import Settings
from boot.wiring import build_agent
from core.messages import ToolCall
from core.tools import Tool, object_schema
from gate.scripted import ScriptedGateway


def note_tool(workspace):
    def write_note(path: str, text: str) -> str:
        (workspace / path).write_text(text, encoding="utf-8")
        return f"wrote {path}"
    return Tool("write_note", "Write a text file in the workspace.",
                object_schema({"path": {"type": "string"}, "text": {"type": "string"}}, ["path", "text"]), write_note)


ONLY_GIVEN_TOOLS = dict(enable_files=False, enable_shell=False, enable_pyexe=False, enable_fetch=False,
                        enable_data_view=False, enable_memory=False, enable_skills=False)


def test_each_build_returns_fresh_parts(workspace):
    settings = Settings(workspace=workspace, **ONLY_GIVEN_TOOLS)
    one = build_agent(settings, gateway=ScriptedGateway([]), tools=[note_tool(workspace)])
    two = build_agent(settings, gateway=ScriptedGateway([]), tools=[note_tool(workspace)])
    assert one.registry is not two.registry and one.sessions is not two.sessions
    assert [t.name for t in one.registry.tools()] == ["write_note", "plan"]
    assert one.sessions.path == workspace.resolve() / ".agent" / "sessions.db"
    one.sessions.close()
    two.sessions.close()


def test_every_enabled_tool_is_registered_and_closed_with_the_agent(workspace):
    agent = build_agent(Settings(workspace=workspace, ctx=32768), gateway=ScriptedGateway([]))
    names = [t.name for t in agent.registry.tools()]
    assert names == ["list_files", "read_file", "search_files", "write_file", "edit_file", "shell", "pyexe", "fetch",
                     "data_view", "memory", "promote_skill", "plan"]
    assert (workspace / ".agent" / "memory.db").is_file()
    assert len(agent.closers) == 2  # the Python REPL and the memory store
    agent.close()
    assert agent.closers == []


@pytest.mark.parametrize("flag,name", [("enable_shell", "shell"), ("enable_pyexe", "pyexe"), ("enable_fetch", "fetch"),
                                       ("enable_data_view", "data_view"), ("enable_memory", "memory"),
                                       ("enable_skills", "promote_skill")])
def test_a_tool_turned_off_is_not_offered(workspace, flag, name):
    agent = build_agent(Settings(workspace=workspace, **{flag: False}), gateway=ScriptedGateway([]))
    assert name not in {t.name for t in agent.registry.tools()}
    agent.close()


def test_a_small_context_drops_optional_tools_but_never_promote_skill(workspace):
    from flow.events import AgentEvents

    notices: list[str] = []

    class Notes(AgentEvents):
        def notice(self, message: str) -> None:
            notices.append(message)

    gateway = ScriptedGateway(["first", "second"])
    agent = build_agent(Settings(workspace=workspace, ctx=4096, toolset="all"), gateway=gateway, events=Notes())
    assert agent.run("one").status == "done"
    assert agent.run("two").status == "done"
    offered = [t.name for t in gateway.requests[0].tools]
    assert {"read_file", "write_file", "edit_file", "list_files", "search_files", "shell", "promote_skill"} <= set(offered)
    assert "memory" not in offered
    left_out = [n for n in notices if "context is small" in n]
    assert len(left_out) == 1 and "memory" in left_out[0] and "promote_skill" not in left_out[0]  # said once
    agent.close()


def test_the_tools_offered_are_the_core_ones_in_a_stable_order_plus_what_the_task_calls_for(workspace):
    gateway = ScriptedGateway(["fixed", "fetched", "kept", "promoted"], context=8192)
    agent = build_agent(Settings(workspace=workspace), gateway=gateway)
    agent.run("fix the off-by-one in stats.py")
    agent.run("fetch https://example.com/notes.txt")
    agent.run("remember that I prefer pytest -q, and plan the next steps")
    agent.run("make slugify in text.py a skill I can reuse")
    offered = [[t.name for t in r.tools] for r in gateway.requests]
    core = ["read_file", "edit_file", "write_file", "list_files", "search_files", "shell"]
    assert offered[0] == core
    assert offered[1] == core + ["fetch"]
    assert offered[2][:len(core)] == core and set(offered[2][len(core):]) == {"memory", "plan"}
    # at 8k promote_skill is offered when the task is about skills (it once gave way to the context first)
    assert offered[3] == ["read_file", "edit_file", "write_file", "list_files", "search_files", "promote_skill", "shell"]
    agent.close()


def test_small_models_see_lean_schemas_and_a_call_with_a_hidden_argument_is_refused(workspace):
    gateway = ScriptedGateway([ToolCall("shell", {"command": "echo hi", "cwd": "src"}), "Done."], context=8192)
    agent = build_agent(Settings(workspace=workspace, judge_rounds=0), gateway=gateway)
    agent.run("say hi from the shell")
    shell = next(t for t in gateway.requests[0].tools if t.name == "shell")
    assert list(shell.parameters["properties"]) == ["command"]
    result = gateway.requests[1].messages[-1].content
    assert result.startswith("Error:") and "cwd" in result
    agent.close()


def test_the_file_tools_are_offered_when_enabled(workspace):
    agent = build_agent(Settings(workspace=workspace, enable_files=True), gateway=ScriptedGateway([]))
    names = {t.name for t in agent.registry.tools()}
    assert {"read_file", "write_file", "edit_file", "list_files", "search_files"} <= names
    agent.sessions.close()


@pytest.mark.parametrize("fmt", ["native", "tool_call", "fence", "bare", "tag"])
def test_the_loop_over_http_runs_calls_in_every_format_and_sends_a_valid_history(workspace, fmt):
    server_mod = pytest.importorskip("gate.scripted_server")
    replies = [
        {"text": "Writing it.", "tool_calls": [{"name": "write_note", "arguments": {"path": "hi.txt", "text": "hi"}}],
         "format": fmt},
        {"text": "Created hi.txt."},
    ]
    with server_mod.ScriptedServer(replies, n_ctx=4096) as server:
        settings = Settings(workspace=workspace, enable_files=False, model_url=server.base_url, model="scripted-model")
        agent = build_agent(settings, tools=[note_tool(workspace)])
        result = agent.run("create hi.txt saying hi")
        agent.sessions.close()
    assert (result.status, result.answer) == ("done", "Created hi.txt.")
    assert (workspace / "hi.txt").read_text() == "hi"
    assert server.unexpected == 0
    second = server.requests[1]["messages"]
    assistant, tool = second[-2], second[-1]
    assert assistant["role"] == "assistant"
    call = assistant["tool_calls"][0]
    assert call["function"]["name"] == "write_note"
    assert json.loads(call["function"]["arguments"]) == {"path": "hi.txt", "text": "hi"}
    assert (tool["role"], tool["tool_call_id"], tool["content"]) == ("tool", call["id"], "wrote hi.txt")


def test_a_long_task_with_the_real_file_tools_fits_a_4k_context(workspace):
    from core.messages import ToolCall

    from flow_helpers import well_formed

    gateway_ref: list = []
    state = {"work": 0, "summaries": 0}
    body = "".join(f"def helper_{n}(x):\n    return x * {n}\n\n" for n in range(40))

    def model(messages, offered):
        gateway = gateway_ref[0]
        assert gateway.count_tokens(messages, offered) <= 4096 - 1024
        if not offered:
            state["summaries"] += 1
            return "Task: write and check modules. Files touched: m0.py onwards. Open items: continue."
        well_formed(messages)
        assert messages[2].content == "write twelve modules and read each back"
        state["work"] += 1
        n = state["work"]
        if n > 24:
            return "Wrote and checked m1.py to m12.py."
        if n % 2:
            return [f"Writing m{n // 2 + 1}.py.", ToolCall("write_file", {"path": f"m{n // 2 + 1}.py", "content": body})]
        return ToolCall("read_file", {"path": f"m{n // 2}.py"})

    settings = Settings(workspace=workspace, enable_files=True, max_reply_tokens=2048, max_steps=40)
    with ScriptedGateway([model] * 60, context=4096) as gateway:
        gateway_ref.append(gateway)
        agent = build_agent(settings, gateway=gateway)
        result = agent.run("write twelve modules and read each back")
        gateway.steps = gateway.steps[:gateway.calls]  # compactions come when they must
    agent.sessions.close()
    assert (result.status, result.steps) == ("done", 25)
    assert state["summaries"] >= 1
    assert sorted(p.name for p in workspace.glob("m*.py")) == sorted(f"m{i}.py" for i in range(1, 13))
    assert all(r.ok for r in result.tool_calls)


def test_ctrl_c_during_a_stalled_http_stream_interrupts_and_the_session_resumes(workspace):
    import threading
    import time

    from flow.events import AgentEvents

    server_mod = pytest.importorskip("gate.scripted_server")
    replies = [{"text": "Let me think about this carefully", "stall_after": 12}, {"text": "Resumed."}]
    with server_mod.ScriptedServer(replies, n_ctx=8192) as server:
        settings = Settings(workspace=workspace, enable_files=False, model_url=server.base_url, model="scripted-model")
        cancel = threading.Event()

        class CtrlC(AgentEvents):
            def __init__(self):
                self.shown = ""

            def text(self, delta):
                self.shown += delta
                if len(self.shown) >= 12:
                    cancel.set()  # the person presses Ctrl-C once the stream stalls

        events = CtrlC()
        agent = build_agent(settings, events=events)
        start = time.monotonic()
        result = agent.run("think", cancel=cancel)
        assert time.monotonic() - start < 10
        assert (result.status, result.answer) == ("interrupted", "Let me think")
        assert server.client_left.wait(10)
        again = agent.run("go on", session_id=result.session_id)
        agent.sessions.close()
    assert (again.status, again.answer) == ("done", "Resumed.")
    sent = server.requests[1]["messages"]
    assert [(m["role"], m["content"]) for m in sent[2:]] == [
        ("user", "think"), ("assistant", "Let me think [interrupted]"), ("user", "go on")]


def test_a_server_that_constrains_calls_gets_every_step_as_a_required_call_and_final_answer_ends_it(workspace):
    steps = [ToolCall("shell", {"command": "echo hi > out.txt"}),
             [ToolCall("final_answer", {"answer": "ignored while work is asked for"}),
              ToolCall("shell", {"command": "echo more >> out.txt"})],
             ToolCall("final_answer", {"answer": "Wrote out.txt."})]
    gateway = ScriptedGateway(steps, context=8192, constrains=True)
    agent = build_agent(Settings(workspace=workspace, judge_rounds=0), gateway=gateway)
    result = agent.run("write hi to out.txt")
    assert (result.status, result.answer) == ("done", "Wrote out.txt.")
    assert (workspace / "out.txt").read_text() == "hi\nmore\n"
    assert [r.tool_choice for r in gateway.requests] == ["required"] * 3
    names = [t.name for t in gateway.requests[0].tools]
    assert names[names.index("shell") + 1] == "final_answer"  # right after the core tools: a cached prefix
    assert [r.name for r in result.tool_calls] == ["shell", "shell"]  # final_answer is not a tool run
    agent.close()


@pytest.mark.parametrize("constrains, mode, required", [(False, "auto", False), (True, "off", False),
                                                        (False, "on", True)])
def test_free_replies_unless_the_server_constrains_calls_or_the_setting_says_so(workspace, constrains, mode, required):
    gateway = ScriptedGateway([ToolCall("final_answer", {"answer": "Hi."}) if required else "Hi."],
                              context=8192, constrains=constrains)
    agent = build_agent(Settings(workspace=workspace, constrained_calls=mode), gateway=gateway)
    assert agent.run("say hi").answer == "Hi."
    request = gateway.requests[0]
    assert request.tool_choice == ("required" if required else None)
    assert ("final_answer" in request.tool_names) is required
    agent.close()
