"""The plan: a short task list the model keeps with the ``plan`` tool, stored with the session.

Items are ``pending``, ``in_progress``, ``done`` or ``blocked``; at most one is in progress and a
plan holds at most :data:`MAX_ITEMS`. The plan's overall state, the seed's project state machine,
is derived from the items, never set by hand:

    planning   no item started yet (or no items)
    executing  an item is in progress, or some are done and others still pending
    reviewing  every item is done or blocked; the work waits for the checks (or, with a blocked
               item, for the person)
    complete   every item done and the finished answer accepted (the judge's checks passed)

The plan lives in the session's state (``SessionStore.set_state(sid, "plan", …)``) and reaches the
model through a ``system_prompt_extra`` section asked before every model call, so it survives
compaction (the loop never drops the system prompt) and resume (a new agent reads the same state).

The tool learns which session it works on from that same section: the loop asks the section for
``(task, session_id)`` before every model call, and the calls of that reply run after it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from core.errors import ToolError
from core.tools import Tool, ToolResult, object_schema
from store.sessions import SessionStore

STATE_KEY = "plan"
STATUSES = ("pending", "in_progress", "done", "blocked")
STATES = ("planning", "executing", "reviewing", "complete")
#: more than this and the plan stops being a glance; small models also copy long lists badly
MAX_ITEMS = 12
MAX_TEXT = 160

_MARKS = {"pending": "[ ]", "in_progress": "[>]", "done": "[x]", "blocked": "[!]"}
_RICH_MARKS = {"pending": "[dim]○[/dim]", "in_progress": "[bold yellow]▶[/bold yellow]",
               "done": "[green]✓[/green]", "blocked": "[red]✗[/red]"}

DESCRIPTION = (
    "Keep a short checklist for a task of several steps; it stays in your instructions every turn. "
    "action 'set' replaces the list (items: list of short steps, all pending); 'add' appends one (text); "
    "'update' changes item N (1-based) to a status and/or new text; 'show' returns it. "
    f"Statuses: pending, in_progress (at most one at a time), done, blocked. At most {MAX_ITEMS} items. "
    "Mark an item in_progress when you start it and done when it is finished."
)


@dataclass(frozen=True)
class PlanItem:
    """One step of the plan."""

    text: str
    status: str = "pending"


@dataclass(frozen=True)
class Plan:
    """The items, in order, and whether the finished work was accepted."""

    items: tuple[PlanItem, ...] = ()
    accepted: bool = False  # set when a run ends done with every item done; any change clears it

    @property
    def state(self) -> str:
        """planning → executing → reviewing → complete, derived from the items."""
        statuses = [i.status for i in self.items]
        if not statuses or all(s == "pending" for s in statuses):
            return "planning"
        if any(s in ("pending", "in_progress") for s in statuses):
            return "executing"
        if self.accepted and all(s == "done" for s in statuses):
            return "complete"
        return "reviewing"

    @property
    def done(self) -> int:
        return sum(1 for i in self.items if i.status == "done")

    def to_json(self) -> dict[str, Any]:
        return {"items": [{"text": i.text, "status": i.status} for i in self.items], "accepted": self.accepted}

    @classmethod
    def from_json(cls, value: Any) -> "Plan":
        """The plan stored as :meth:`to_json` wrote it; ``None`` is the empty plan."""
        if value is None:
            return cls()
        if not isinstance(value, dict) or not isinstance(value.get("items"), list):
            raise ValueError(f"the stored plan is not a plan object: {str(value)[:80]}")
        items = []
        for raw in value["items"]:
            if not isinstance(raw, dict) or not isinstance(raw.get("text"), str) or raw.get("status") not in STATUSES:
                raise ValueError(f"the stored plan has a malformed item: {str(raw)[:80]}")
            items.append(PlanItem(raw["text"], raw["status"]))
        return cls(tuple(items), bool(value.get("accepted", False)))


# --- showing it ---------------------------------------------------------------------------------

def _heading(plan: Plan) -> str:
    return f"{plan.state}, {plan.done} of {len(plan.items)} done"


def plan_lines(plan: Plan) -> list[str]:
    """The items as numbered checklist lines: ``2. [>] split slugify``."""
    return [f"{n}. {_MARKS[item.status]} {item.text}" for n, item in enumerate(plan.items, start=1)]


def render_plan_checklist(plan: Plan, *, markup: bool = False) -> str:
    """The plan for a person (``/plan``): plain text, or rich markup with ``markup=True``."""
    if not plan.items:
        return "No plan yet: the model makes one with the plan tool for a task of several steps."
    if not markup:
        return f"Plan ({_heading(plan)})\n" + "\n".join(plan_lines(plan))
    from rich.markup import escape  # only the CLI asks for markup

    lines = [f"[bold]Plan[/bold] [dim]({_heading(plan)})[/dim]"]
    for n, item in enumerate(plan.items, start=1):
        text = escape(item.text)
        if item.status == "done":
            text = f"[dim]{text}[/dim]"
        elif item.status == "in_progress":
            text = f"[bold]{text}[/bold]"
        lines.append(f"{n:>2}. {_RICH_MARKS[item.status]} {text}")
    return "\n".join(lines)


def plan_prompt_section(plan: Plan) -> str | None:
    """The plan as the system prompt shows it every turn; ``None`` when there is no plan."""
    if not plan.items:
        return None
    if plan.state == "complete":
        follow = "This plan is complete. For a new task, replace it with plan action 'set'."
    elif plan.state == "reviewing":
        follow = "Every item is done or blocked: check the work, then answer (say what is blocked and why)."
    else:
        follow = "Keep it current with the plan tool: in_progress when you start an item, done when it is finished."
    return f"## Plan ({_heading(plan)})\n" + "\n".join(plan_lines(plan)) + "\n" + follow


# --- keeping it -----------------------------------------------------------------------------------

def load_plan(sessions: SessionStore, session_id: str) -> Plan:
    """The session's plan (the empty plan when it has none)."""
    return Plan.from_json(sessions.get_state(session_id, STATE_KEY))


def save_plan(sessions: SessionStore, session_id: str, plan: Plan) -> None:
    sessions.set_state(session_id, STATE_KEY, plan.to_json())


def _checked_text(text: str, where: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise ToolError(f"{where} is empty", hint="describe the step in a few words")
    if len(text) > MAX_TEXT:
        raise ToolError(f"{where} is {len(text)} characters long; the limit is {MAX_TEXT}",
                        hint="name the step in a short line; details belong in your work, not the plan")
    return text


def _too_many(count: int) -> ToolError:
    return ToolError(f"a plan holds at most {MAX_ITEMS} items ({count} asked)",
                     hint="merge small steps into larger ones, or replace finished items with plan action 'set'")


def apply_action(plan: Plan, action: str, *, items: list[str] | None = None, text: str | None = None,
                 item: int | None = None, status: str | None = None) -> Plan:
    """The plan after one ``plan`` tool call; raises :class:`ToolError` with a hint for the model."""
    if action == "show":
        return plan
    if action == "set":
        if items is None:
            raise ToolError("action 'set' needs items", hint='call plan(action="set", items=["first step", "second step"])')
        if not items:
            raise ToolError("items is empty", hint="give the steps of the task, in order")
        if len(items) > MAX_ITEMS:
            raise _too_many(len(items))
        return Plan(tuple(PlanItem(_checked_text(t, f"item {n}")) for n, t in enumerate(items, start=1)))
    if action == "add":
        if text is None:
            raise ToolError("action 'add' needs text", hint='call plan(action="add", text="the new step")')
        if len(plan.items) >= MAX_ITEMS:
            raise _too_many(len(plan.items) + 1)
        return Plan(plan.items + (PlanItem(_checked_text(text, "text")),))
    if action == "update":
        if not plan.items:
            raise ToolError("there is no plan to update", hint='make one first: plan(action="set", items=[...])')
        if item is None or (status is None and text is None):
            raise ToolError("action 'update' needs item and a status (or new text)",
                            hint='call plan(action="update", item=1, status="done")')
        if not 1 <= item <= len(plan.items):
            raise ToolError(f"there is no item {item}; the plan has items 1 to {len(plan.items)}",
                            hint='see them with plan(action="show")')
        current = plan.items[item - 1]
        changed = replace(current, text=_checked_text(text, "text") if text is not None else current.text,
                          status=status or current.status)
        if changed.status == "in_progress":
            busy = [n for n, i in enumerate(plan.items, start=1) if i.status == "in_progress" and n != item]
            if busy:
                raise ToolError(f"item {busy[0]} is already in progress; only one item can be",
                                hint=f'first mark item {busy[0]} done, blocked or pending, then start item {item}')
        return Plan(plan.items[:item - 1] + (changed,) + plan.items[item:])
    raise ToolError(f"unknown action {action!r}", hint="use one of: set, add, update, show")


class Planner:
    """The plan of the agent's current session: the ``plan`` tool and the prompt section, together."""

    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions
        self.session_id: str | None = None  # the session the tool writes to (set by the section)

    def bind(self, session_id: str) -> None:
        """Work on ``session_id`` (the prompt section does this before every model call)."""
        self.session_id = session_id

    def load(self, session_id: str) -> Plan:
        return load_plan(self.sessions, session_id)

    def section(self, task: str, session_id: str) -> str | None:
        """The ``system_prompt_extra`` section: binds the session and shows its plan."""
        del task  # the plan belongs to the session, not to one task
        self.bind(session_id)
        return plan_prompt_section(self.load(session_id))

    def accept(self, session_id: str) -> Plan:
        """The run ended done: a plan whose items are all done becomes ``complete``."""
        plan = self.load(session_id)
        if plan.items and not plan.accepted and all(i.status == "done" for i in plan.items):
            plan = replace(plan, accepted=True)
            save_plan(self.sessions, session_id, plan)
        return plan

    def call(self, action: str, items: list[str] | None = None, text: str | None = None,
             item: int | None = None, status: str | None = None) -> ToolResult:
        """One ``plan`` tool call on the bound session."""
        if self.session_id is None:
            raise ToolError("the plan tool is not connected to a session",
                            hint="continue without a plan; this is a wiring problem to report")
        before = self.load(self.session_id)
        plan = apply_action(before, action, items=items, text=text, item=item, status=status)
        if plan != before:
            save_plan(self.sessions, self.session_id, plan)
        if not plan.items:
            return ToolResult("No plan yet. Make one with plan(action=\"set\", items=[...]).", summary="no plan")
        summary = {"set": f"plan set: {len(plan.items)} items", "add": "plan: item added",
                   "update": f"plan: item {item} {status or 'renamed'}", "show": "plan shown"}[action]
        return ToolResult(f"Plan ({_heading(plan)}):\n" + "\n".join(plan_lines(plan)), summary=summary,
                          data={"state": plan.state})

    def tool(self) -> Tool:
        """The ``plan`` tool for the model."""
        def plan(action: str, items: list[str] | None = None, text: str | None = None, item: int | None = None,
                 status: str | None = None) -> ToolResult:
            return self.call(action, items, text, item, status)

        return Tool("plan", DESCRIPTION, object_schema({
            "action": {"type": "string", "enum": ["set", "add", "update", "show"]},
            "items": {"type": "array", "items": {"type": "string"}, "description": "set: the steps, in order"},
            "text": {"type": "string", "description": "add: the new step; update: new wording"},
            "item": {"type": "integer", "minimum": 1, "description": "update: the step's number (1-based)"},
            "status": {"type": "string", "enum": list(STATUSES), "description": "update: the new status"},
        }, ["action"]), plan, timeout_s=30)
