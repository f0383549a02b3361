"""The agent loop against the strict scripted gateway: every path out of a run."""

from __future__ import annotations

import threading

import pytest

from core.errors import ConfigError, ContextOverflow, GatewayError, ModelUnavailable
from core.messages import Completion, Message, ToolCall, Usage
from flow.loop import Agent
from flow.prompt import system_prompt
from store.sessions import SessionNotFound

from flow_helpers import well_formed


def test_tool_call_then_answer_records_the_call_before_its_result(make_agent, store, tools, workspace):
    call = ToolCall("write_note", {"path": "a.txt", "text": "hello"})

    def answer(messages, offered):
        assert messages[-1] == Message.tool(call.id, "write_note", "wrote 5 characters to a.txt")
        assert messages[-2].tool_calls == (call,)
        return "Wrote a.txt."

    agent, gateway, events = make_agent([call, answer])
    result = agent.run("write hello to a.txt")

    assert (result.status, result.answer, result.steps) == ("done", "Wrote a.txt.", 2)
    assert (workspace / "a.txt").read_text() == "hello"
    assert [(r.name, r.arguments, r.ok, r.summary) for r in result.tool_calls] == [
        ("write_note", {"path": "a.txt", "text": "hello"}, True, "wrote a.txt")]
    assert [m.role for m in store.messages(result.session_id)] == ["user", "assistant", "tool", "assistant"]
    assert store.info(result.session_id).status == "done"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert events.kinds()[:4] == ["thinking", "usage", "assistant_done", "tool_start"]
    assert "".join(events.of("text")) == "Wrote a.txt."
    first = gateway.requests[0]
    assert [m.role for m in first.messages[:2]] == ["system", "system"] and first.messages[2] == Message.user("write hello to a.txt")
    assert sorted(first.tool_names) == ["big", "block", "echo", "fail", "write_note"]


def test_bad_arguments_go_back_to_the_model_with_the_schema_hint(make_agent, tools):
    def check(messages, offered):
        result = messages[-1]
        assert result.role == "tool"
        assert result.content == ("Error: invalid arguments for echo: 'text' is required but missing; "
                                  "at 'times': expected integer, got \"twice\"\nHint: call it as echo(text: string, times?: integer)")
        return "I could not."

    agent, _, _ = make_agent([ToolCall("echo", {"times": "twice"}), check])
    result = agent.run("echo something")
    assert result.status == "done"
    assert tools.ran == []
    assert [r.ok for r in result.tool_calls] == [False]


def test_string_numbers_are_accepted_for_integer_fields(make_agent, tools):
    agent, _, _ = make_agent([ToolCall("echo", {"text": "ab", "times": "2"}), "ok"])
    assert agent.run("echo").status == "done"
    assert tools.ran == [("echo", {"text": "ab", "times": 2})]


def test_unknown_tool_is_reported_with_the_offered_names(make_agent):
    def check(messages, offered):
        assert messages[-1].content == ("Error: there is no tool named 'delete_everything'\n"
                                        "Hint: the tools you can call are: big, block, echo, fail, write_note")
        return "sorry"

    agent, _, _ = make_agent([ToolCall("delete_everything", {}), check])
    assert agent.run("clean up").status == "done"


def test_undecodable_arguments_from_the_server_are_reported(make_agent):
    def check(messages, offered):
        assert messages[-1].content.startswith("Error: the call of echo could not be read: arguments are not valid JSON")
        assert "Hint: call it as echo(text: string, times?: integer)" in messages[-1].content
        return "sorry"

    agent, _, _ = make_agent([ToolCall("echo", {}, error="arguments are not valid JSON (Expecting value at position 0)"),
                              check])
    assert agent.run("echo").status == "done"


@pytest.mark.parametrize("text", [
    'Let me look.\n<tool_call>\n{"name": "echo", "arguments": {"text": "hi"}}\n</tool_call>',
    'Let me look.\n<tool_call>\n{"name": "echo", "arguments": {"text": "hi"}}',
    'Let me look.\n```json\n{"name": "echo", "arguments": {"text": "hi"}}\n```',
    'Let me look. {"name": "echo", "arguments": "{\\"text\\": \\"hi\\"}"}',
    'Let me look.\n<tool name="echo">{"text": "hi"}</tool>',
], ids=["tool_call", "unclosed_tool_call", "fence", "bare_double_encoded", "seed_tag"])
def test_text_format_tool_calls_reach_the_loop_as_tool_calls(make_agent, store, tools, text):
    def check(messages, offered):
        assistant, result = messages[-2], messages[-1]
        assert assistant.content == "Let me look."
        assert [(c.name, dict(c.arguments)) for c in assistant.tool_calls] == [("echo", {"text": "hi"})]
        assert result.tool_call_id == assistant.tool_calls[0].id and result.content == "hi"
        return "done"

    agent, _, _ = make_agent([text, check])
    result = agent.run("say hi")
    assert result.status == "done"
    assert tools.ran == [("echo", {"text": "hi", "times": 1})]
    well_formed(store.messages(result.session_id))


def test_an_unreadable_tool_call_block_is_explained_to_the_model(make_agent, store):
    def check(messages, offered):
        assert messages[-1].role == "user"
        assert messages[-1].content.startswith("(your tool call could not be read: the text inside <tool_call> is not valid JSON")
        return "ok"

    agent, _, _ = make_agent(['<tool_call>{"name": "echo", "arguments": {oops}</tool_call>', check])
    result = agent.run("say hi")
    assert result.status == "done"
    well_formed(store.messages(result.session_id))


def test_the_same_failing_call_three_times_ends_the_run(make_agent, store, tools):
    call = lambda: ToolCall("fail", {"path": "missing.txt"})  # noqa: E731 - a fresh id each time
    agent, _, _ = make_agent([call(), call(), call()])
    result = agent.run("read missing.txt")
    assert result.status == "format_errors"
    assert result.reason.startswith('the model made the same failing call 3 times: fail {"path": "missing.txt"}')
    assert len(tools.ran) == 3
    well_formed(store.messages(result.session_id))
    assert store.info(result.session_id).status == "format_errors"


def test_consecutive_malformed_replies_end_the_run(make_agent):
    agent, _, _ = make_agent([ToolCall("nope", {}), "", ToolCall("echo", {"bad": 1})])
    result = agent.run("do it")
    assert result.status == "format_errors"
    assert result.reason.startswith("3 replies in a row whose tool calls could not run; the last: ")
    assert result.steps == 3


def test_a_good_call_resets_the_malformed_count(make_agent):
    agent, _, _ = make_agent([ToolCall("nope", {}), ToolCall("nope", {"x": 1}), ToolCall("echo", {"text": "a"}),
                              ToolCall("nope", {"y": 1}), ToolCall("nope", {"z": 1}), "finished"])
    assert agent.run("do it").status == "done"


def test_step_budget_ends_the_run_before_the_next_model_call(make_agent, store):
    agent, gateway, _ = make_agent([ToolCall("echo", {"text": "1"}), ToolCall("echo", {"text": "2"})], max_steps=2)
    result = agent.run("loop forever")
    assert (result.status, result.budget, result.steps) == ("budget_exceeded", "steps", 2)
    assert result.reason == "step budget spent: 2 model calls (raise --max-steps (AGENT_MAX_STEPS) or continue with --resume)"
    assert gateway.calls == 2
    well_formed(store.messages(result.session_id))


def test_time_budget_ends_the_run(make_agent):
    from core.tools import Tool, object_schema

    # a tool that takes longer than the whole run may
    nap = Tool("nap", "Take 0.3 s.", object_schema({}), lambda: threading.Event().wait(0.3) and "" or "rested")
    agent, gateway, _ = make_agent([ToolCall("nap", {})], max_wall_s=0.2, tool_list=[nap])
    result = agent.run("wait")
    assert (result.status, result.budget, result.steps) == ("budget_exceeded", "time", 1)
    assert result.reason.startswith("time budget spent: 0 s")


def test_token_budget_ends_the_run(make_agent):
    heavy = Completion(Message.assistant("", [ToolCall("echo", {"text": "a"})]), "tool_calls", Usage(900, 200))
    agent, gateway, _ = make_agent([heavy], max_tokens_total=1000)
    result = agent.run("spend")
    assert (result.status, result.budget) == ("budget_exceeded", "tokens")
    assert result.usage.total_tokens == 1100


def test_a_tool_that_hangs_is_reported_as_a_timeout_and_the_run_goes_on(make_agent, tools):
    def check(messages, offered):
        assert messages[-1].content.startswith("Error: block did not finish within 0.2 s and was abandoned")
        return "gave up"

    slow = tools.block()
    hanging = type(slow)(slow.name, slow.description, slow.parameters, slow.fn, timeout_s=0.2)
    agent, _, events = make_agent([ToolCall("block", {}), check], tool_list=[hanging])
    result = agent.run("wait")
    assert result.status == "done"
    assert result.tool_calls[0].ok is False and result.tool_calls[0].duration_s < 5


def test_ctrl_c_while_a_tool_runs_interrupts_and_the_session_stays_usable(make_agent, store, tools):
    cancel = threading.Event()
    agent, _, events = make_agent([[ToolCall("block", {}), ToolCall("echo", {"text": "later"})]])
    waiter = threading.Thread(target=lambda: (tools.started.wait(10), cancel.set()))
    waiter.start()
    result = agent.run("wait", cancel=cancel)
    waiter.join()
    assert result.status == "interrupted"
    messages = store.messages(result.session_id)
    well_formed(messages)
    assert [m.content for m in messages if m.role == "tool"] == [
        "Error: interrupted by the person before the tool finished"] * 2
    assert ("echo", {"text": "later", "times": 1}) not in tools.ran
    assert store.info(result.session_id).status == "interrupted"

    def resumed(messages, offered):
        well_formed(messages)
        assert messages[-1] == Message.user("go on")
        return "resumed"

    agent2, _, _ = make_agent([resumed])
    again = agent2.run("go on", session_id=result.session_id)
    assert (again.status, again.answer, again.session_id) == ("done", "resumed", result.session_id)


def test_keyboard_interrupt_in_the_loop_thread_leaves_no_dangling_call(make_agent, store):
    agent, _, events = make_agent([ToolCall("echo", {"text": "x"})])

    def ctrl_c(call):
        raise KeyboardInterrupt

    events.on_tool_start = ctrl_c
    result = agent.run("echo")
    assert (result.status, result.reason) == ("interrupted", "interrupted by the person")
    well_formed(store.messages(result.session_id))


def test_ctrl_c_while_the_answer_streams_interrupts(make_agent, store):
    cancel = threading.Event()
    agent, _, events = make_agent(["A long answer that is being streamed piece by piece."])
    events.on_text = lambda delta: cancel.set()
    result = agent.run("explain", cancel=cancel)
    assert result.status == "interrupted"
    assert "".join(events.of("text")) == "A lo"
    assert result.answer == "A lo"
    assert store.messages(result.session_id)[1:] == [Message.assistant("A lo [interrupted]")]

    agent2, _, _ = make_agent(["short"])
    assert agent2.run("again", session_id=result.session_id).status == "done"


def test_cancel_set_before_the_run_makes_no_model_call(make_agent):
    cancel = threading.Event()
    cancel.set()
    agent, gateway, _ = make_agent([])
    assert agent.run("anything", cancel=cancel).status == "interrupted"
    assert gateway.calls == 0


def test_a_gateway_error_ends_the_run_with_a_one_line_reason(make_agent, store):
    agent, _, _ = make_agent([GatewayError("HTTP 500 from the model server:\n  engine crashed", status_code=500)])
    result = agent.run("anything")
    assert (result.status, result.reason) == ("error", "HTTP 500 from the model server: engine crashed")
    assert store.info(result.session_id).status == "error"


def test_model_unavailable_propagates_for_the_cli(make_agent, store):
    agent, _, _ = make_agent([ModelUnavailable("nothing answers at http://127.0.0.1:9/v1")])
    with pytest.raises(ModelUnavailable):
        agent.run("anything")
    sid = store.latest()
    assert store.info(sid).status == "error"


def test_a_context_overflow_from_the_server_is_retried_with_a_shorter_request(make_agent, events=None):
    agent, gateway, recorder = make_agent([ContextOverflow("prompt too long", status_code=400), "fits now"])
    result = agent.run("hello")
    assert (result.status, result.answer) == ("done", "fits now")
    assert "the server said the request was too long; building a shorter one" in recorder.of("notice")


def test_empty_task_is_refused(make_agent):
    agent, _, _ = make_agent([])
    with pytest.raises(ConfigError, match="the task is empty"):
        agent.run("   ")


def test_unknown_session_is_refused(make_agent):
    agent, _, _ = make_agent([])
    with pytest.raises(SessionNotFound, match="no session 'nope'"):
        agent.run("hi", session_id="nope")


def test_read_only_calls_of_one_reply_run_concurrently(make_agent, tools, workspace):
    barrier = threading.Barrier(2, timeout=5)

    def meet(text: str) -> str:
        barrier.wait()  # only returns when both calls are running at once
        return text

    from core.tools import Tool, object_schema
    meet_tool = Tool("meet", "Meet.", object_schema({"text": {"type": "string"}}, ["text"]), meet, read_only=True)
    agent, _, events = make_agent([[ToolCall("meet", {"text": "a"}), ToolCall("meet", {"text": "b"})], "both met"],
                                  tool_list=[meet_tool])
    result = agent.run("meet")
    assert result.status == "done"
    assert [r.ok for r in result.tool_calls] == [True, True]
    ends = [p[1].content for p in events.of("tool_end")]
    assert ends == ["a", "b"]


def test_system_prompt_names_workspace_os_shell_and_extra_sections(make_agent, workspace, monkeypatch):
    monkeypatch.setenv("SHELL", "/bin/zsh")
    seen = []

    def plan(task, session_id):
        seen.append((task, session_id))
        return "## Plan\n- [ ] write the test"

    def broken(task, session_id):
        raise RuntimeError("index missing")

    def check(messages, offered):
        assert "without a tool call" in messages[0].content
        assert messages[0].content == system_prompt()  # the same bytes for every task and workspace
        system = messages[1].content
        assert "Workspace: the current folder." in system
        assert "shell: /bin/zsh" in system
        assert system.endswith("## Plan\n- [ ] write the test")
        assert "echo" not in system  # tools go through the API, not the prose
        return "ok"

    agent, _, recorder = make_agent([check], extra=[plan, broken])
    result = agent.run("write the test")
    assert seen == [("write the test", result.session_id)]
    assert any(n.startswith("prompt section") and "index missing" in n for n in recorder.of("notice"))


def test_tools_from_a_provider_are_asked_before_every_model_call(make_agent, tools):
    from core.tools import Tool, object_schema

    class Skills:
        def __init__(self):
            self.offer: list[Tool] = []

        def tools(self):
            return list(self.offer)

    skills = Skills()
    shout = Tool("shout", "Upper-case.", object_schema({"text": {"type": "string"}}, ["text"]),
                 lambda text: text.upper(), source="skill")

    def promote(messages, offered):
        assert "shout" not in [t.name for t in offered]
        skills.offer.append(shout)
        return ToolCall("echo", {"text": "promoted"})

    def use(messages, offered):
        assert "shout" in [t.name for t in offered]
        return ToolCall("shout", {"text": "hi"})

    def check(messages, offered):
        assert messages[-1].content == "HI"
        return "done"

    agent, _, _ = make_agent([promote, use, check])
    agent.registry.add_provider(skills)
    assert agent.run("promote and use").status == "done"


def test_another_gateway_continues_the_same_session(make_agent, store):
    from gate.scripted import ScriptedGateway

    agent, first, _ = make_agent([ToolCall("echo", {"text": "a"}), "first answer"], context=8192)
    result = agent.run("start")

    def check(messages, offered):
        assert [m.role for m in messages] == ["system", "system", "user", "assistant", "tool", "assistant", "user"]
        return "second answer"

    with ScriptedGateway([check], model="other", context=32768) as second:
        agent.use_gateway(second)
        again = agent.run("continue", session_id=result.session_id)
    assert (again.status, again.answer) == ("done", "second answer")
    assert agent.context.context_length == 32768
    assert store.info(result.session_id).model == "other"


def test_a_task_too_big_for_the_context_ends_with_a_context_budget(make_agent, store):
    agent, gateway, _ = make_agent([], context=4096, max_reply_tokens=1024)
    result = agent.run("summarise this: " + "word " * 4000)
    assert (result.status, result.budget, result.steps) == ("budget_exceeded", "context", 0)
    assert "more than the 3072 this model's context leaves after the reply budget" in result.reason
    assert gateway.calls == 0
    assert store.info(result.session_id).status == "budget_exceeded"


def test_the_context_is_asked_again_each_run_until_the_server_says(make_settings, store):
    from gate.scripted import ScriptedGateway
    from tool.registry import ToolRegistry

    class StartsLate(ScriptedGateway):
        """A server that cannot say its context at first (still loading), then can."""

        answers = [None, 4096]

        def context_length(self):
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    with StartsLate(["one", "two"]) as gateway:
        agent = Agent(gateway, ToolRegistry(), store, make_settings())
        agent.run("first")
        assert agent.context.context_length == 8192
        agent.run("second")
        assert agent.context.context_length == 4096


def test_a_verifier_can_send_the_work_back_and_then_accept_it(make_agent, store):
    from core.errors import RunEnded
    from flow.loop import Finished

    seen: list[Finished] = []

    def judge(finished: Finished):
        seen.append(finished)
        return "Checks failed: 1 test failed in test_a.py. Fix it." if len(seen) == 1 else None

    def fix(messages, offered):
        assert messages[-1] == Message.user("Checks failed: 1 test failed in test_a.py. Fix it.")
        return ToolCall("write_note", {"path": "a.py", "text": "fixed"})

    agent, _, _ = make_agent([ToolCall("write_note", {"path": "a.py", "text": "bug"}), "Done.", fix, "Done, fixed."])
    agent.verifier = judge
    result = agent.run("write a.py")
    assert (result.status, result.answer, result.steps) == ("done", "Done, fixed.", 4)
    assert [f.answer for f in seen] == ["Done.", "Done, fixed."]
    assert [c.arguments["text"] for c in seen[1].tool_calls] == ["bug", "fixed"]

    class ChecksFailed(RunEnded):
        status = "checks_failed"

    def strict(finished: Finished):
        raise ChecksFailed("checks still failing after 2 rounds: 1 failed")

    agent2, _, _ = make_agent(["Done."])
    agent2.verifier = strict
    ended = agent2.run("write b.py")
    assert (ended.status, ended.reason, ended.answer) == ("checks_failed", "checks still failing after 2 rounds: 1 failed", "Done.")
    assert store.info(ended.session_id).status == "checks_failed"


@pytest.mark.parametrize("reply", [
    '```json\n{"name": "count_py"}\n```',
    '{"name": "run_tests", "args": "-q"}',
    'Counting.<|im_start|>assistant',
    '<tool_response>\n{"ok": true}\n</tool_response>',
])
def test_an_answer_that_is_a_failed_call_goes_back_to_the_model_instead_of_ending_done(make_agent, reply):
    def check(messages, offered):
        assert messages[-2].content == reply
        assert messages[-1].role == "user" and "looks like a tool call" in messages[-1].content
        assert "the tools are: " in messages[-1].content and "echo" in messages[-1].content
        return "There are 3 Python files."

    agent, _, _ = make_agent([reply, check])
    result = agent.run("count the python files")
    assert (result.status, result.answer) == ("done", "There are 3 Python files.")


def test_an_answer_with_json_data_that_is_not_a_call_ends_the_run(make_agent):
    answer = '{"name": "myapp", "version": "1.2.0", "private": true}'
    agent, _, _ = make_agent([answer])
    assert (agent.run("what does package.json hold?").status, ) == ("done", )
