"""End to end with a real Agent and the scripted model: write, promote, then call the new tool."""

from __future__ import annotations

from pathlib import Path

from boot.settings import Settings
from core.messages import Message, ToolCall
from core.tools import Tool
from flow.loop import Agent
from gate.scripted import ScriptedGateway
from store.sessions import SessionStore
from tool.files import file_tools
from tool.registry import ToolRegistry
from tool.skills import SkillLoader, promote_skill_tool

from skills_helpers import WordEmbedder, require_bwrap, skill_source, write

SOURCE = '''"""Text helpers."""
import re

WORD = re.compile(r"[a-z']+")


def count_words(text: str, top: int = 2) -> dict[str, int]:
    """Count the most frequent words of a text.

    Args:
        text: the text to count
        top: how many of the most frequent words to return
    """
    counts: dict[str, int] = {}
    for word in WORD.findall(text.lower()):
        counts[word] = counts.get(word, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top])
'''


def make_agent(root: Path, steps: list, **loader_options) -> tuple[Agent, ScriptedGateway, list[str]]:
    settings = Settings(workspace=root, ctx=None, max_steps=10, max_reply_tokens=512, tool_result_tokens=2000,
                        enable_files=True, tool_timeout_s=30.0)
    registry = ToolRegistry(default_timeout_s=settings.tool_timeout_s, result_tokens=settings.tool_result_tokens)
    registry.register_all(file_tools(root))
    registry.register(promote_skill_tool(settings, registry=registry))
    registry.add_provider(SkillLoader(settings, registry=registry, **loader_options))
    notices: list[str] = []
    registry.on_notice = notices.append
    gateway = ScriptedGateway(steps, context=8192)
    return Agent(gateway, registry, SessionStore.for_workspace(root), settings), gateway, notices


def last_tool_message(messages: list[Message]) -> Message:
    return [m for m in messages if m.role == "tool"][-1]


def test_write_promote_then_the_new_tool_is_offered_and_called_in_the_next_step(tmp_path: Path):
    require_bwrap()
    root = tmp_path / "ws"
    root.mkdir()

    def promote(messages: list[Message], tools: list[Tool]):
        assert last_tool_message(messages).content.startswith("Created scratch/text.py")
        assert "count_words" not in [t.name for t in tools]
        return ToolCall("promote_skill", {"file_path": "scratch/text.py", "function_name": "count_words",
                                          "examples": [{"args": {"text": "b a b"}, "expected": {"b": 2, "a": 1}}]},
                        id="p1")

    def use(messages: list[Message], tools: list[Tool]):
        assert "Promoted scratch/text.py:count_words" in last_tool_message(messages).content
        offered = {t.name: t for t in tools}
        assert offered["count_words"].source == "skill"
        assert offered["count_words"].parameters["required"] == ["text"]
        return ToolCall("count_words", {"text": "the cat and the hat and the bat", "top": 2}, id="u1")

    def answer(messages: list[Message], tools: list[Tool]):
        result = last_tool_message(messages)
        assert result.content == '{"the": 3, "and": 2}'
        return "the: 3, and: 2"

    agent, gateway, notices = make_agent(root, [
        ToolCall("write_file", {"path": "scratch/text.py", "content": SOURCE}, id="w1"), promote, use, answer])
    with gateway:
        result = agent.run("count the words of a sentence with a reusable tool")
    assert result.status == "done" and result.answer == "the: 3, and: 2"
    assert [c.name for c in result.tool_calls] == ["write_file", "promote_skill", "count_words"]
    assert all(c.ok for c in result.tool_calls)
    assert (root / "skills" / "count_words.py").is_file()
    assert notices == ["skill count_words loaded"]


def test_a_failing_skill_call_reaches_the_model_as_an_error_and_the_run_goes_on(tmp_path: Path):
    require_bwrap()
    root = tmp_path / "ws"
    write(root / "skills" / "divide.py", skill_source("divide", "return a // b"))

    def see_error(messages: list[Message], tools: list[Tool]):
        content = last_tool_message(messages).content
        assert content.startswith("Error: skill divide raised an exception:") and "ZeroDivisionError" in content
        return "cannot divide by zero"

    agent, gateway, _ = make_agent(root, [ToolCall("divide", {"a": 1, "b": 0}, id="d1"), see_error])
    with gateway:
        result = agent.run("divide one by zero")
    assert result.status == "done" and result.tool_calls[0].ok is False


def test_with_many_skills_the_model_is_offered_those_nearest_the_task(tmp_path: Path):
    require_bwrap()
    root = tmp_path / "ws"
    for name, summary in {"csv_columns": "List the column names of a csv file.", "parse_date": "Parse a date.",
                          "resize_image": "Resize an image.", "json_keys": "List the keys of a json object."}.items():
        write(root / "skills" / f"{name}.py", skill_source(name, "return x", params="x: int", summary=summary))
    embedder = WordEmbedder(["csv", "date", "image", "json", "column"])

    def check(messages: list[Message], tools: list[Tool]):
        skills = [t.name for t in tools if t.source == "skill"]
        assert skills == ["csv_columns"]
        return "done"

    agent, gateway, _ = make_agent(root, [check], embedder=lambda: embedder, max_offered=1,
                                   embed_in_background=False)
    with gateway:
        assert agent.run("which column of data.csv has the dates of sales?").status == "done"
