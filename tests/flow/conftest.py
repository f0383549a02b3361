"""Fixtures for the loop tests: real settings, a real session store in tmp, small real tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from boot.settings import Settings
from core.tools import Tool
from flow.loop import Agent
from gate.scripted import ScriptedGateway
from store.sessions import SessionStore
from tool.registry import ToolRegistry

from flow_helpers import Recorder, Tools


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def tools(workspace: Path):
    t = Tools(workspace)
    yield t
    t.release.set()


@pytest.fixture
def store(workspace: Path):
    s = SessionStore.for_workspace(workspace)
    yield s
    s.close()


@pytest.fixture
def make_settings(workspace: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"workspace": workspace, "ctx": None, "max_steps": 20, "max_reply_tokens": 512,
                                  "tool_result_tokens": 2000, "enable_files": False}
        values.update(overrides)
        return Settings(**values)
    return make


@pytest.fixture
def make_agent(make_settings, store: SessionStore, tools: Tools):
    """``make_agent(steps, **settings)`` -> (agent, gateway, recorder); leftover steps fail the test."""
    made: list[ScriptedGateway] = []

    def make(steps: list[Any], *, context: int | None = 8192, extra: Any = None,
             tool_list: list[Tool] | None = None, **overrides: Any) -> tuple[Agent, ScriptedGateway, Recorder]:
        settings = make_settings(**overrides)
        gateway = ScriptedGateway(steps, context=context)
        made.append(gateway)
        registry = ToolRegistry(default_timeout_s=settings.tool_timeout_s, result_tokens=settings.tool_result_tokens)
        registry.register_all(tools.all() if tool_list is None else tool_list)
        recorder = Recorder()
        return Agent(gateway, registry, store, settings, events=recorder, system_prompt_extra=extra), gateway, recorder

    yield make
    for gateway in made:
        gateway.assert_done()
