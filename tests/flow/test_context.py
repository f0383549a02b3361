"""The context budget: clip, stub, drop whole rounds, compact; with a 4k-token context."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import BudgetExceeded, GatewayError
from core.messages import Message, ToolCall
from core.tools import Tool, object_schema
from flow.compaction import SUMMARY_HEADER
from flow.context import ContextBudget, reply_budget, rounds
from gate.scripted import ScriptedGateway
from store.sessions import StoredMessage

from flow_helpers import well_formed

TASK = "Refactor utils.py: split slugify into two functions and keep the tests green."


def history(*messages: Message) -> list[StoredMessage]:
    return [StoredMessage(i, float(i), m) for i, m in enumerate(messages, start=1)]


def tool_round(name: str, content: str, **args: Any) -> list[Message]:
    call = ToolCall(name, args)
    return [Message.assistant("", [call]), Message.tool(call.id, name, content)]


def test_reply_budget_is_the_setting_but_at_most_a_quarter_of_a_small_context():
    assert reply_budget(32768, 2048) == 2048
    assert reply_budget(4096, 2048) == 1024


def test_rounds_keep_a_call_with_its_results_and_leave_out_orphaned_results():
    a, b = ToolCall("x", {}), ToolCall("y", {})
    h = history(Message.user("t"), Message.assistant("", [a, b]), Message.tool(a.id, "x", "1"),
                Message.tool(b.id, "y", "2"), Message.tool("call_gone", "z", "orphan"), Message.assistant("done"))
    assert [[e.seq for e in unit] for unit in rounds(h)] == [[1], [2, 3, 4], [6]]


def test_a_request_that_fits_is_sent_unchanged_without_an_exact_count():
    gateway = ScriptedGateway([], context=4096)
    budget = ContextBudget(gateway, context_length=4096, reply_tokens=1024)
    h = history(Message.user(TASK), *tool_round("read", "small output", path="a.py"))
    request = budget.build(Message.system("sys"), h, (), task_seq=1)
    assert request.messages == [Message.system("sys")] + [e.message for e in h]
    assert (request.dropped, request.stubbed, request.clipped) == ([], 0, 0)
    assert budget.counter.exact_calls == 0


def test_a_big_tool_result_is_clipped_with_head_tail_and_how_to_see_more():
    gateway = ScriptedGateway([], context=4096)
    budget = ContextBudget(gateway, context_length=4096, reply_tokens=1024, tool_result_tokens=300)
    text = "".join(f"line {i}\n" for i in range(1, 2001))
    h = history(Message.user(TASK), *tool_round("read_file", text, path="big.txt"))
    request = budget.build(Message.system("sys"), h, (), task_seq=1)
    clipped = request.messages[-1].content
    assert clipped.startswith("line 1\nline 2\n")
    assert clipped.endswith("line 2000\n")
    assert "left out" in clipped and "read_file with a line range" in clipped
    assert len(clipped) < 300 * 3 + 400
    assert request.clipped == 1


def test_old_outputs_become_stubs_before_any_round_is_dropped():
    gateway = ScriptedGateway([], context=4096)
    budget = ContextBudget(gateway, context_length=4096, reply_tokens=1024)
    rounds_ = [tool_round("read_file", f"content {i} " + "y" * 2000, path=f"f{i}.py") for i in range(5)]
    h = history(Message.user(TASK), *[m for r in rounds_ for m in r])
    request = budget.build(Message.system("sys"), h, (), task_seq=1)
    assert request.dropped == []
    assert request.stubbed >= 1
    assert request.messages[1] == Message.user(TASK)
    assert request.messages[-1].content == "content 4 " + "y" * 2000  # the newest round is whole
    stub = request.messages[3].content
    assert stub.startswith("[old output of read_file left out to save context (ok, 2010 characters)")
    assert request.clipped == 0
    well_formed(request.messages)
    assert gateway.count_tokens(request.messages, ()) <= 4096 - 1024


def test_when_stubs_are_not_enough_the_oldest_whole_rounds_are_dropped_and_the_task_kept():
    gateway = ScriptedGateway([], context=4096)
    budget = ContextBudget(gateway, context_length=4096, reply_tokens=1024)
    msgs = [Message.user("an older request " + "z" * 500)]
    msgs.append(Message.user(TASK))
    for i in range(60):
        msgs += tool_round("write_note", "ok", path=f"n{i}.txt", text="w" * 50)
    h = history(*msgs)
    request = budget.build(Message.system("sys"), h, (), task_seq=2)
    kept = request.messages
    assert Message.user(TASK) in kept
    assert kept[-1] == h[-1].message
    well_formed(kept)
    dropped = {e.seq for e in request.dropped}
    assert 1 in dropped and 2 not in dropped
    for unit in rounds(h):  # a round is dropped whole or kept whole
        assert len({e.seq in dropped for e in unit}) == 1
    assert request.tokens <= 0.6 * budget.limit + 50


def test_a_task_that_alone_does_not_fit_ends_with_a_context_budget():
    gateway = ScriptedGateway([], context=4096)
    budget = ContextBudget(gateway, context_length=4096, reply_tokens=1024)
    with pytest.raises(BudgetExceeded) as info:
        budget.build(Message.system("sys"), history(Message.user("q" * 20000)), (), task_seq=1)
    assert info.value.budget == "context"
    assert "more than the 3072 this model's context leaves" in info.value.message


def test_the_estimate_is_checked_exactly_only_near_the_limit():
    gateway = ScriptedGateway([], context=4096)
    budget = ContextBudget(gateway, context_length=4096, reply_tokens=1024)
    near = [m for i in range(4) for m in tool_round("read", "k" * 1900, path=f"{i}")]
    h = history(Message.user(TASK), *near)
    request = budget.build(Message.system("sys"), h, (), task_seq=1)
    assert request.exact is True and budget.counter.exact_calls == 1
    assert request.tokens == gateway.count_tokens(request.messages, ())


# --- the whole loop with a 4k context ----------------------------------------------------------

def big_tool() -> Tool:
    def read_chunk(n: int) -> str:
        return "".join(f"chunk {n} line {i:03d} " + "v" * 30 + "\n" for i in range(80))
    return Tool("read_chunk", "Read chunk n.", object_schema({"n": {"type": "integer"}}, ["n"]), read_chunk,
                read_only=True)


class Model:
    """Plays a long task: reads chunks, answers summary requests, checks every request it gets."""

    def __init__(self, gateway_ref: list, work_steps: int, limit: int) -> None:
        self.gateway_ref = gateway_ref
        self.work_steps = work_steps
        self.limit = limit
        self.work = 0
        self.summaries = 0
        self.summary_fail = False

    def __call__(self, messages: list[Message], offered: list[Tool]) -> Any:
        gateway = self.gateway_ref[0]
        assert gateway.count_tokens(messages, offered) <= self.limit, "request exceeds the context budget"
        if not offered:  # a compaction request
            self.summaries += 1
            assert "Conversation part:" in messages[-1].content
            if self.summary_fail:
                return GatewayError("HTTP 503 from the model server", status_code=503)
            return f"Task: refactor utils.py. Files touched: chunks 0-{self.work}. Open items: continue reading."
        well_formed(messages)
        assert messages[1].role == "system" and messages[1].content.endswith("## Plan\n- [ ] split slugify")
        assert Message.user(TASK) in messages
        if self.summaries:
            assert any(m.content.startswith(SUMMARY_HEADER) for m in messages)
        self.work += 1
        if self.work > self.work_steps:
            return "All chunks read."
        # models narrate as they go; this makes each round weigh what a real one does
        note = f"Chunk {self.work - 1} had nothing about slugify; its helpers are unrelated. " * 4
        return [note.strip(), ToolCall("read_chunk", {"n": self.work})]


def run_long_task(make_agent, *, fail_summary: bool = False):
    ref: list = []
    model = Model(ref, work_steps=24, limit=4096 - 1024)
    model.summary_fail = fail_summary
    steps = [model] * 60
    agent, gateway, events = make_agent(steps, context=4096, max_reply_tokens=2048, max_steps=40,
                                        tool_list=[big_tool()], extra=lambda task, sid: "## Plan\n- [ ] split slugify")
    ref.append(gateway)
    result = agent.run(TASK)
    # the script was generous (compactions happen when they must); keep only the steps used
    gateway.steps = gateway.steps[:gateway.calls]
    return result, model, gateway, events


def test_a_long_task_with_a_4k_context_is_compacted_and_finishes(make_agent, store):
    result, model, gateway, events = run_long_task(make_agent)
    assert (result.status, result.answer, result.steps) == ("done", "All chunks read.", 25)
    assert model.summaries >= 2  # compacted more than once
    assert gateway.calls == 25 + model.summaries
    assert any(n.startswith("context compacted:") and "summarised by the model" in n for n in events.of("notice"))
    records = store.records(result.session_id)
    summaries = [r for r in records if r.kind == "summary"]
    assert len(summaries) == 1  # an older summary is folded into the newer one
    assert summaries[0].message.content.startswith(SUMMARY_HEADER + "\nTask: refactor utils.py.")
    assert records[0].message == Message.user(TASK)
    everything = store.records(result.session_id, include_compacted=True)
    assert len(everything) > len(records)
    assert sum(1 for r in everything if r.compacted) > 0
    well_formed([r.message for r in records])


def test_a_resumed_session_starts_from_its_summary(make_agent, store):
    result, _, _, _ = run_long_task(make_agent)
    summary = [r for r in store.records(result.session_id) if r.kind == "summary"][0].message

    def check(messages, offered):
        assert summary in messages
        well_formed(messages)
        return "continuing"

    agent, _, _ = make_agent([check], context=4096, max_reply_tokens=2048, tool_list=[big_tool()])
    assert agent.run("go on", session_id=result.session_id).status == "done"


def test_compaction_without_the_model_falls_back_to_a_plain_summary(make_agent, store):
    result, model, _, events = run_long_task(make_agent, fail_summary=True)
    assert result.status == "done"
    assert any("a plain summary is used" in n for n in events.of("notice"))
    summary = [r for r in store.records(result.session_id) if r.kind == "summary"][0].message.content
    assert summary.startswith(SUMMARY_HEADER + "\n(Written without the model: HTTP 503 from the model server.)")
    assert "Tool calls made: read_chunk" in summary


def test_the_newest_round_is_clipped_harder_when_it_alone_is_too_big():
    gateway = ScriptedGateway([], context=4096)
    budget = ContextBudget(gateway, context_length=4096, reply_tokens=1024)
    calls = [ToolCall("read_file", {"path": f"f{i}"}) for i in range(5)]
    results = [Message.tool(c.id, "read_file", "".join(f"{i}:{n}\n" for n in range(6000))) for i, c in enumerate(calls)]
    h = history(Message.user(TASK), Message.assistant("", calls), *results)
    request = budget.build(Message.system("sys"), h, (), task_seq=1)
    assert request.dropped == []
    assert len(request.messages) == 8
    well_formed(request.messages)
    for i, msg in enumerate(request.messages[3:]):
        assert msg.content.startswith(f"{i}:0\n") and msg.content.endswith(f"{i}:5999\n") and "left out" in msg.content
    assert gateway.count_tokens(request.messages, ()) <= budget.limit


def test_a_short_old_output_is_kept_rather_than_replaced_by_a_longer_stub():
    gateway = ScriptedGateway([], context=4096)
    budget = ContextBudget(gateway, context_length=4096, reply_tokens=1024)
    small = tool_round("write_note", "ok", path="a.txt", text="w" * 3000)
    rounds_ = [tool_round("read_file", "r" * 2000, path=f"f{i}.py") for i in range(4)]
    h = history(Message.user(TASK), *small, *[m for r in rounds_ for m in r])
    request = budget.build(Message.system("sys"), h, (), task_seq=1)
    assert request.dropped == []
    old_call, old_result = request.messages[2], request.messages[3]
    assert old_result.content == "ok"
    assert old_call.tool_calls[0].arguments["text"] == "w" * 120 + "… [2880 more characters]"
