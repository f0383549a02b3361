"""Wiring: settings in, a ready agent out. Every call returns fresh objects (no module state)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

from boot.settings import Settings
from core.gateway import ModelGateway
from core.tools import Tool
from flow.context import rounds
from flow.events import AgentEvents
from flow.judge import CheckResult, Judge
from flow.loop import Agent, Finished, Verifier
from flow.planner import Planner, load_plan, render_plan_checklist
from flow.prompt import PromptSection
from store.sessions import SessionStore
from tool.registry import ToolRegistry


def build_registry(settings: Settings, *, tools: Sequence[Tool] = ()) -> ToolRegistry:
    """The tool registry for ``settings``: the enabled built-in tools, then ``tools``."""
    registry = ToolRegistry(default_timeout_s=settings.tool_timeout_s, result_tokens=settings.tool_result_tokens)
    if settings.enable_files:
        from tool.files import file_tools  # imported when enabled: the file tools are optional

        registry.register_all(file_tools(settings.workspace_root))
    registry.register_all(tools)
    return registry


@dataclass
class Verification:
    """The agent's verifier: ``check`` (the judge, or the one given), then an all-done plan is complete."""

    check: Verifier
    judge: Judge
    planner: Planner

    def __call__(self, finished: Finished) -> str | None:
        feedback = self.check(finished)
        if feedback is None:
            self.planner.accept(finished.session_id)
        return feedback


def build_agent(settings: Settings, *, gateway: ModelGateway | None = None, events: AgentEvents | None = None,
                tools: Sequence[Tool] = (), sessions: SessionStore | None = None,
                system_prompt_extra: PromptSection | Sequence[PromptSection] | None = None,
                verifier: Verifier | None = None) -> Agent:
    """A ready agent: the local gateway unless one is given, the enabled tools, the workspace's sessions.

    The agent keeps a plan (the ``plan`` tool, shown in the system prompt every turn) and its answers are
    judged by the workspace's checks (:class:`flow.judge.Judge`) unless another ``verifier`` is given.
    """
    if gateway is None:
        from gate.factory import make_gateway  # the HTTP client stack is loaded only when used

        gateway = make_gateway(settings, "local")
    root = settings.workspace_root
    root.mkdir(parents=True, exist_ok=True)
    registry = build_registry(settings, tools=tools)
    store = sessions if sessions is not None else SessionStore.for_workspace(root)
    planner = Planner(store)
    registry.register(planner.tool())
    if system_prompt_extra is None:
        extra: list[PromptSection] = []
    elif callable(system_prompt_extra):
        extra = [system_prompt_extra]
    else:
        extra = list(system_prompt_extra)
    judge = Judge(settings)
    agent = Agent(gateway, registry, store, settings, events=events, system_prompt_extra=[planner.section, *extra],
                  verifier=Verification(verifier or judge, judge, planner))
    registry.on_notice = agent.events.notice
    judge.notice = agent.events.notice
    return agent


def plan_checklist(agent: Agent, session_id: str, *, markup: bool = False) -> str:
    """The session's plan as a checklist (the CLI's ``/plan``; ``markup=True`` for rich)."""
    return render_plan_checklist(load_plan(agent.sessions, session_id), markup=markup)


def last_check(agent: Agent) -> CheckResult | None:
    """The judge's latest check of this agent (``None``: none ran, or the agent has no judge)."""
    verification = agent.verifier
    return verification.judge.last if isinstance(verification, Verification) else None


def compact_session(agent: Agent, session_id: str, *, keep_rounds: int = 2,
                    cancel: threading.Event | None = None) -> int:
    """Summarise all of a session but its newest ``keep_rounds`` rounds now (``/compact``).

    Returns how many messages were summarised (0: too little to compact). The summary is written
    by the agent's model, or built without it when the model fails, as during a run.
    """
    history = agent.sessions.load(session_id)
    units = rounds(history)
    older = [entry for unit in units[:max(0, len(units) - keep_rounds)] for entry in unit]
    if len(older) < 2:
        return 0
    agent.events.notice(f"compacting the context: summarising {len(older)} older messages")
    summary = agent.compactor.summarise(older, cancel=cancel, on_retry=agent.events.notice,
                                        factor=agent.context.counter.factor)
    agent.sessions.compact(session_id, [e.seq for e in older], summary.message)
    how = "summarised by the model" if summary.by_model else "summarised without the model"
    agent.events.notice(f"context compacted: {len(older)} older messages {how}")
    return len(older)
