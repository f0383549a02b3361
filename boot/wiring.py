"""Wiring: settings in, a ready agent out. Every call returns fresh objects (no module state)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

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

if TYPE_CHECKING:
    from store.embed import Embedder
    from tool.files import FileTools
    from store.memory import MemoryStore


def build_registry(settings: Settings, *, tools: Sequence[Tool] = (), memory: "MemoryStore | None" = None,
                   closers: list[Callable[[], None]] | None = None,
                   embedder: "Callable[[], Embedder] | None" = None,
                   files: "FileTools | None" = None) -> ToolRegistry:
    """The tool registry for ``settings``: the enabled built-in tools, ``tools``, then the skills.

    Tool modules are imported only when enabled. Whatever holds a process or a file (the Python
    REPL) puts its ``close`` on ``closers``. ``memory`` is the store the ``memory`` tool uses;
    ``embedder`` gives the skill loader the memory's embedder so the model is loaded once; ``files``
    is the file tools' state (what was read) when the caller shares it with the workspace view.
    """
    registry = ToolRegistry(default_timeout_s=settings.tool_timeout_s, result_tokens=settings.tool_result_tokens)
    root = settings.workspace_root
    if settings.enable_files:
        from tool.files import FileTools

        registry.register_all((files or FileTools(root)).tools())
    if settings.enable_shell:
        from tool.shell import shell_tool

        registry.register(shell_tool(settings))
    if settings.enable_pyexe:
        from tool.pyexe import PythonSession

        python = PythonSession(settings)  # the interpreter starts on the first call
        registry.register(python.tool())
        if closers is not None:
            closers.append(python.close)
    if settings.enable_fetch:
        from tool.fetch import fetch_tool

        registry.register(fetch_tool(settings))
    if settings.enable_data_view:
        from tool.data_view import data_view_tool

        registry.register(data_view_tool(root, settings=settings))
    if memory is not None:
        from tool.memory import memory_tool

        registry.register(memory_tool(memory))
    registry.register_all(tools)
    if settings.enable_skills:
        from tool.skills import SkillLoader, promote_skill_tool  # the embedder loads only when many skills exist

        registry.register(promote_skill_tool(settings, registry=registry))
        registry.add_provider(SkillLoader(settings, registry=registry, max_offered=settings.skills_offered,
                                          embedder=embedder if embedder is not None else True))
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
    closers: list[Callable[[], None]] = []
    opened: list[SessionStore] = []
    try:
        agent = _assemble(settings, gateway, events, tools, sessions, system_prompt_extra, verifier, closers, opened)
    except BaseException:
        # what was opened before the failure (the memory store, the Python REPL, the sessions) is closed
        for close in [*reversed(closers), *(store.close for store in opened)]:
            with contextlib.suppress(Exception):
                close()
        raise
    agent.closers.extend(closers)
    registry = agent.registry
    registry.on_notice = agent.events.notice
    if isinstance(agent.verifier, Verification):
        agent.verifier.judge.notice = agent.events.notice
    return agent


def _assemble(settings: Settings, gateway: ModelGateway, events: AgentEvents | None, tools: Sequence[Tool],
              sessions: SessionStore | None, system_prompt_extra: PromptSection | Sequence[PromptSection] | None,
              verifier: Verifier | None, closers: list[Callable[[], None]], opened: list[SessionStore]) -> Agent:
    """The parts of :func:`build_agent`; whatever holds a resource goes on ``closers`` or ``opened`` first."""
    root = settings.workspace_root
    memory = embedder = None
    if settings.enable_memory:
        from store.embed import make_embedder  # lazy: no torch until a memory is stored or searched
        from store.memory import MemoryStore

        shared = make_embedder(settings)
        memory = MemoryStore.for_workspace(root, shared)
        closers.append(memory.close)
        embedder = lambda: shared  # noqa: E731  (the skill loader asks for a factory)
    files = None
    if settings.enable_files:
        from tool.files import FileTools

        files = FileTools(root)
    registry = build_registry(settings, tools=tools, memory=memory, closers=closers, embedder=embedder, files=files)
    if sessions is not None:
        store = sessions
    else:
        store = SessionStore.for_workspace(root)
        opened.append(store)
    planner = Planner(store)
    registry.register(planner.tool())
    if system_prompt_extra is None:
        extra: list[PromptSection] = []
    elif callable(system_prompt_extra):
        extra = [system_prompt_extra]
    else:
        extra = list(system_prompt_extra)
    if files is not None and settings.workspace_view_tokens > 0:
        from flow.workspace_view import WorkspaceView

        extra.append(WorkspaceView(files, budget_tokens=settings.workspace_view_tokens))
    if memory is not None and settings.memory_recall_tokens > 0:
        from store.memory import RecallSection

        extra.append(RecallSection(memory, settings.memory_recall_tokens))
    judge = Judge(settings)
    if verifier is None:
        events = judge.watch(events)  # the judge records what fails before the run's first change
    return Agent(gateway, registry, store, settings, events=events, system_prompt_extra=[planner.section, *extra],
                 verifier=Verification(verifier or judge, judge, planner))


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
