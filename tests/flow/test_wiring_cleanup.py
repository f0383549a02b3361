"""build_agent closes what it opened when a later part fails; the memory recall section is wired."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boot.settings import Settings
from boot.wiring import build_agent
from core.errors import ConfigError
from core.tools import Tool, object_schema
from gate.scripted import ScriptedGateway

ONLY_MEMORY = dict(enable_files=False, enable_shell=False, enable_pyexe=False, enable_fetch=False,
                   enable_data_view=False, enable_memory=True, enable_skills=False)


def open_files_under(folder: Path) -> list[str]:
    """Files below ``folder`` this process holds open (from /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder.resolve()) + os.sep):
            found.append(target)
    return sorted(found)


def echo_tool(name: str) -> Tool:
    return Tool(name, "Echo.", object_schema({"text": {"type": "string"}}, ["text"]), lambda text: text)


@pytest.fixture(autouse=True)
def needs_proc() -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see which files are open")


def test_a_failing_registry_closes_the_memory_store(workspace):
    settings = Settings(workspace=workspace, **ONLY_MEMORY)
    with pytest.raises(ValueError, match="already registered"):
        build_agent(settings, gateway=ScriptedGateway([]), tools=[echo_tool("echo"), echo_tool("echo")])
    assert (workspace / ".agent" / "memory.db").is_file()  # it was opened
    assert open_files_under(workspace) == []


def test_a_damaged_session_database_closes_the_memory_store(workspace):
    settings = Settings(workspace=workspace, **ONLY_MEMORY)
    (workspace / ".agent").mkdir()
    (workspace / ".agent" / "sessions.db").write_bytes(b"not a database " * 500)
    with pytest.raises(ConfigError, match="cannot open the session database"):
        build_agent(settings, gateway=ScriptedGateway([]))
    assert (workspace / ".agent" / "memory.db").is_file()
    assert open_files_under(workspace) == []


def test_a_built_agent_holds_its_files_until_closed_and_recalls_memories(workspace):
    from store.memory import RecallSection

    agent = build_agent(Settings(workspace=workspace, **ONLY_MEMORY), gateway=ScriptedGateway([]))
    assert any(path.endswith("memory.db") for path in open_files_under(workspace))
    recall = [s for s in agent.prompt_sections if isinstance(s, RecallSection)]
    assert len(recall) == 1 and recall[0].budget_tokens == Settings(workspace=workspace).memory_recall_tokens
    agent.close()
    assert open_files_under(workspace) == []
