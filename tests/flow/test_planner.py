"""The plan: its state machine, the plan tool's checks, and the plan surviving compaction and resume."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from boot.settings import Settings
from boot.wiring import build_agent, compact_session, plan_checklist
from core.messages import Message, ToolCall
from core.tools import Tool, object_schema
from flow.compaction import SUMMARY_HEADER
from flow.planner import MAX_ITEMS, Plan, PlanItem, Planner, load_plan, render_plan_checklist
from gate.scripted import ScriptedGateway
from tool.registry import ToolRegistry

from flow_helpers import Recorder, well_formed


def plan_of(*statuses: str, accepted: bool = False) -> Plan:
    return Plan(tuple(PlanItem(f"step {n}", s) for n, s in enumerate(statuses, start=1)), accepted)


def test_the_overall_state_is_derived_from_the_items():
    assert Plan().state == "planning"
    assert plan_of("pending", "pending").state == "planning"
    assert plan_of("in_progress", "pending").state == "executing"
    assert plan_of("done", "pending").state == "executing"
    assert plan_of("done", "blocked", "in_progress").state == "executing"
    assert plan_of("done", "done").state == "reviewing"
    assert plan_of("done", "blocked").state == "reviewing"
    assert plan_of("done", "done", accepted=True).state == "complete"
    assert plan_of("done", "blocked", accepted=True).state == "reviewing"  # blocked work is not complete


def test_a_plan_round_trips_through_json_and_a_malformed_one_is_refused():
    plan = plan_of("done", "in_progress", accepted=False)
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan.from_json(None) == Plan()
    with pytest.raises(ValueError, match="malformed item"):
        Plan.from_json({"items": [{"text": "x", "status": "started"}]})


# --- the tool ---------------------------------------------------------------------------------------

@pytest.fixture
def planner(store):
    sid = store.create(title="t")
    p = Planner(store)
    p.section("the task", sid)  # what the loop does before every model call
    return p


@pytest.fixture
def call(planner):
    registry = ToolRegistry()
    registry.register(planner.tool())

    def run(**args: Any):
        return registry.execute(ToolCall("plan", args)).result
    return run


def test_set_update_and_add_are_stored_with_the_session(planner, call, store):
    result = call(action="set", items=["read utils.py", "  split   slugify ", "run the tests"])
    assert result.ok
    assert result.content == ("Plan (planning, 0 of 3 done):\n1. [ ] read utils.py\n2. [ ] split slugify\n"
                              "3. [ ] run the tests")
    assert call(action="update", item=1, status="in_progress").content.startswith("Plan (executing, 0 of 3 done)")
    call(action="update", item=1, status="done")
    call(action="add", text="update the changelog")
    stored = store.get_state(planner.session_id, "plan")
    assert stored == {"items": [{"text": "read utils.py", "status": "done"},
                                {"text": "split slugify", "status": "pending"},
                                {"text": "run the tests", "status": "pending"},
                                {"text": "update the changelog", "status": "pending"}], "accepted": False}
    assert call(action="show").content.splitlines()[0] == "Plan (executing, 1 of 4 done):"


@pytest.mark.parametrize("args, message, hint", [
    ({"action": "set"}, "action 'set' needs items", 'plan(action="set", items=['),
    ({"action": "set", "items": []}, "items is empty", "give the steps"),
    ({"action": "set", "items": [f"s{i}" for i in range(MAX_ITEMS + 1)]},
     f"a plan holds at most {MAX_ITEMS} items ({MAX_ITEMS + 1} asked)", "merge small steps"),
    ({"action": "set", "items": ["ok", "   "]}, "item 2 is empty", "describe the step"),
    ({"action": "set", "items": ["x" * 161]}, "item 1 is 161 characters long; the limit is 160", "short line"),
    ({"action": "add"}, "action 'add' needs text", 'plan(action="add"'),
    ({"action": "update", "item": 1, "status": "done"}, "there is no plan to update", 'plan(action="set"'),
])
def test_bad_calls_are_refused_with_a_hint(call, args, message, hint):
    result = call(**args)
    assert not result.ok
    first, second = result.content.splitlines()
    assert first == f"Error: {message}"
    assert second.startswith("Hint: ") and hint in second


def test_the_schema_refuses_an_unknown_status_or_action_and_names_the_choices(call):
    call(action="set", items=["a"])
    bad = call(action="update", item=1, status="started")
    assert not bad.ok and 'expected one of "pending", "in_progress", "done", "blocked", got "started"' in bad.content
    assert 'expected one of "set", "add", "update", "show"' in call(action="remove").content


def test_only_one_item_can_be_in_progress(call, planner):
    call(action="set", items=["a", "b"])
    call(action="update", item=1, status="in_progress")
    refused = call(action="update", item=2, status="in_progress")
    assert refused.content == ("Error: item 1 is already in progress; only one item can be\n"
                               "Hint: first mark item 1 done, blocked or pending, then start item 2")
    assert [i.status for i in planner.load(planner.session_id).items] == ["in_progress", "pending"]
    call(action="update", item=1, status="done")
    assert call(action="update", item=2, status="in_progress").ok


def test_an_update_needs_a_real_item_and_may_reword_it(call, planner):
    call(action="set", items=["a", "b"])
    assert call(action="update", item=3, status="done").content.startswith(
        "Error: there is no item 3; the plan has items 1 to 2")
    assert call(action="update", item=1).content.startswith("Error: action 'update' needs item and a status")
    assert call(action="update", item=2, text="b, carefully").ok
    assert planner.load(planner.session_id).items[1] == PlanItem("b, carefully", "pending")


def test_adding_past_the_cap_is_refused(call):
    call(action="set", items=[f"s{i}" for i in range(MAX_ITEMS)])
    assert call(action="add", text="one more").content.startswith(f"Error: a plan holds at most {MAX_ITEMS} items")


def test_the_tool_says_so_when_no_session_is_bound(store):
    registry = ToolRegistry()
    registry.register(Planner(store).tool())
    result = registry.execute(ToolCall("plan", {"action": "show"})).result
    assert result.content.startswith("Error: the plan tool is not connected to a session")


# --- showing it ---------------------------------------------------------------------------------

def test_the_checklist_for_the_person_plain_and_with_rich_markup():
    plan = Plan((PlanItem("read [config]", "done"), PlanItem("fix it", "in_progress"), PlanItem("ask", "blocked")))
    assert render_plan_checklist(plan) == ("Plan (executing, 1 of 3 done)\n1. [x] read [config]\n2. [>] fix it\n"
                                           "3. [!] ask")
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(render_plan_checklist(plan, markup=True))
    assert out.getvalue() == ("Plan (executing, 1 of 3 done)\n 1. ✓ read [config]\n 2. ▶ fix it\n 3. ✗ ask\n")
    assert render_plan_checklist(Plan()).startswith("No plan yet")


# --- with the loop ---------------------------------------------------------------------------------

TASK = "Refactor utils.py: split slugify into two functions."


def read_chunk_tool() -> Tool:
    def read_chunk(n: int) -> str:
        return "".join(f"chunk {n} line {i:03d} " + "v" * 30 + "\n" for i in range(80))
    return Tool("read_chunk", "Read chunk n.", object_schema({"n": {"type": "integer"}}, ["n"]), read_chunk,
                read_only=True)


def settings_for(workspace, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"workspace": workspace, "ctx": None, "max_steps": 50, "max_reply_tokens": 2048,
                              "tool_result_tokens": 2000, "enable_files": False, "toolset": "all"}
    values.update(overrides)
    return Settings(**values)


class PlanningModel:
    """Sets a plan, reads chunks for many steps (forcing compactions), updates the plan, finishes."""

    def __init__(self, work_steps: int) -> None:
        self.work_steps = work_steps
        self.step = 0
        self.summaries = 0
        self.systems: list[str] = []

    def __call__(self, messages: list[Message], offered: list[Tool]) -> Any:
        if not offered:  # a compaction request
            self.summaries += 1
            return "Task: split slugify. Files touched: none. Open items: keep reading chunks."
        well_formed(messages)
        self.systems.append(messages[1].content)
        if self.summaries:
            assert any(m.content.startswith(SUMMARY_HEADER) for m in messages)
        self.step += 1
        if self.step == 1:
            return ToolCall("plan", {"action": "set", "items": ["read the chunks", "split slugify"]})
        if self.step == 2:
            return ToolCall("plan", {"action": "update", "item": 1, "status": "in_progress"})
        if self.step < self.work_steps:
            note = f"Chunk {self.step} holds nothing about slugify; its helpers are unrelated. " * 4
            return [note.strip(), ToolCall("read_chunk", {"n": self.step})]
        if self.step == self.work_steps:
            return ToolCall("plan", {"action": "update", "item": 1, "status": "done"})
        return "Read every chunk; splitting comes next."


def test_the_plan_stays_in_the_system_prompt_through_compactions_and_a_resume(workspace, store):
    model = PlanningModel(work_steps=32)
    gateway = ScriptedGateway([model] * 60, context=4096)
    events = Recorder()
    agent = build_agent(settings_for(workspace), gateway=gateway, sessions=store, events=events,
                        tools=[read_chunk_tool()])
    result = agent.run(TASK)
    gateway.steps = gateway.steps[:gateway.calls]
    assert (result.status, result.answer) == ("done", "Read every chunk; splitting comes next.")
    assert model.summaries >= 2
    assert sum(1 for n in events.of("notice") if n.startswith("context compacted:")) >= 2
    executing = "## Plan (executing, 0 of 2 done)\n1. [>] read the chunks\n2. [ ] split slugify\n"
    assert "## Plan" not in model.systems[0]  # no plan before the tool made one
    assert model.systems[1].endswith("## Plan (planning, 0 of 2 done)\n1. [ ] read the chunks\n2. [ ] split slugify\n"
                                     "Keep it current with the plan tool: in_progress when you start an item, "
                                     "done when it is finished.")
    # every request after the compactions still carries the plan, current
    for system in model.systems[2:-1]:
        assert executing in system
    assert "## Plan (executing, 1 of 2 done)\n1. [x] read the chunks\n2. [ ] split slugify" in model.systems[-1]

    # a new agent (a new process) on the same session shows the plan from its first request
    seen: list[str] = []

    def resumed(messages: list[Message], offered: list[Tool]) -> str:
        seen.append(messages[1].content)
        return "Next I split slugify."

    again = build_agent(settings_for(workspace), gateway=ScriptedGateway([resumed], context=4096), sessions=store,
                        tools=[read_chunk_tool()])
    assert again.run("go on", session_id=result.session_id).status == "done"
    assert "## Plan (executing, 1 of 2 done)\n1. [x] read the chunks\n2. [ ] split slugify" in seen[0]
    assert plan_checklist(again, result.session_id) == ("Plan (executing, 1 of 2 done)\n1. [x] read the chunks\n"
                                                        "2. [ ] split slugify")


def test_a_plan_all_done_becomes_complete_when_the_run_ends_done(workspace, store):
    steps = [ToolCall("plan", {"action": "set", "items": ["only step"]}),
             ToolCall("plan", {"action": "update", "item": 1, "status": "done"}),
             lambda messages, offered: ("reviewing, 1 of 1 done" in messages[1].content and "Done.") or "no plan seen"]
    with ScriptedGateway(steps) as gateway:
        agent = build_agent(settings_for(workspace), gateway=gateway, sessions=store)
        result = agent.run("do the one step")
    assert (result.status, result.answer) == ("done", "Done.")
    plan = load_plan(store, result.session_id)
    assert (plan.state, plan.accepted) == ("complete", True)
    # new work on the plan takes it out of complete again
    with ScriptedGateway([ToolCall("plan", {"action": "add", "text": "a follow-up"}), "Added."]) as gateway:
        more = build_agent(settings_for(workspace), gateway=gateway, sessions=store)
        more.run("add a follow-up", session_id=result.session_id)
    assert load_plan(store, result.session_id).state == "executing"


def test_compacting_on_demand_keeps_the_newest_rounds_and_the_plan(workspace, store):
    steps: list[Any] = [ToolCall("plan", {"action": "set", "items": ["read", "write"]})]
    steps += [ToolCall("read_chunk", {"n": n}) for n in range(4)] + ["Read four chunks."]
    with ScriptedGateway(steps, context=16384) as gateway:
        agent = build_agent(settings_for(workspace), gateway=gateway, sessions=store, tools=[read_chunk_tool()])
        result = agent.run(TASK)
    before = store.records(result.session_id)
    summary_request: list[str] = []

    def summarise(messages: list[Message], offered: list[Tool]) -> str:
        assert offered == [] and "Conversation part:" in messages[-1].content
        summary_request.append(messages[-1].content)
        return "Task: split slugify. Open items: write."

    gateway.steps.append(summarise)
    with gateway:
        assert compact_session(agent, result.session_id, keep_rounds=2) == len(before) - 3
    after = store.records(result.session_id)
    assert [r.kind for r in after] == ["summary", "message", "message", "message"]
    assert after[0].message.content == SUMMARY_HEADER + "\nTask: split slugify. Open items: write."
    assert [r.message for r in after[1:]] == [r.message for r in before[-3:]]  # the last call, its result, the answer
    assert "User: " + TASK in summary_request[0]
    assert "## Plan (planning, 0 of 2 done)" in agent.system_messages("go on", result.session_id)[-1].content
    assert compact_session(agent, result.session_id, keep_rounds=3) == 0  # nothing older left to fold
