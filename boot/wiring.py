"""Wiring: settings in, a ready agent out. Every call returns fresh objects (no module state)."""

from __future__ import annotations

from typing import Sequence

from boot.settings import Settings
from core.gateway import ModelGateway
from core.tools import Tool
from flow.events import AgentEvents
from flow.loop import Agent, Verifier
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


def build_agent(settings: Settings, *, gateway: ModelGateway | None = None, events: AgentEvents | None = None,
                tools: Sequence[Tool] = (), sessions: SessionStore | None = None,
                system_prompt_extra: PromptSection | Sequence[PromptSection] | None = None,
                verifier: Verifier | None = None) -> Agent:
    """A ready agent: the local gateway unless one is given, the enabled tools, the workspace's sessions."""
    if gateway is None:
        from gate.factory import make_gateway  # the HTTP client stack is loaded only when used

        gateway = make_gateway(settings, "local")
    root = settings.workspace_root
    root.mkdir(parents=True, exist_ok=True)
    registry = build_registry(settings, tools=tools)
    store = sessions if sessions is not None else SessionStore.for_workspace(root)
    agent = Agent(gateway, registry, store, settings, events=events, system_prompt_extra=system_prompt_extra,
                  verifier=verifier)
    registry.on_notice = agent.events.notice
    return agent
