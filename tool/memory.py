"""The ``memory`` tool: the model stores, searches, lists and forgets long-term memories."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from core.errors import ToolError
from core.tools import Tool, ToolResult, object_schema
from store.memory import KINDS

if TYPE_CHECKING:
    from store.memory import MemoryStore
PREVIEW_CHARS = 300

DESCRIPTION = (
    "Long-term memory that lasts across sessions. action=store saves one short fact, lesson "
    "(what worked or failed), preference (how the person likes things) or snippet; action=search "
    "finds memories by meaning and by exact words (identifiers, error codes); action=list shows "
    "the most recent; action=forget deletes one by id. Store only what will help in a later session."
)


def _schema() -> dict[str, Any]:
    return object_schema({
        "action": {"type": "string", "enum": ["store", "search", "forget", "list"], "description": "What to do"},
        "text": {"type": "string", "description": "store: what to remember, one or two self-contained sentences"},
        "kind": {"type": "string", "enum": list(KINDS), "description": "store: the kind (default fact); search/list: only this kind"},
        "tags": {"type": "array", "items": {"type": "string"},
                 "description": "store: a few one-word tags; search/list: only memories with all of these"},
        "query": {"type": "string", "description": "search: what you are looking for"},
        "k": {"type": "integer", "minimum": 1, "maximum": 20, "description": "search: how many results (default 5)"},
        "id": {"type": "integer", "minimum": 1, "description": "forget: the id shown by search or list"},
        "n": {"type": "integer", "minimum": 1, "maximum": 50, "description": "list: how many (default 10)"},
    }, required=["action"])


_FIELDS = {"store": {"text", "kind", "tags"}, "search": {"query", "k", "kind", "tags"},
           "forget": {"id"}, "list": {"n", "kind", "tags"}}


def _line(memory: Any, now: float, score: str = "") -> str:
    text = " ".join(memory.text.split())
    if len(text) > PREVIEW_CHARS:
        text = text[:PREVIEW_CHARS] + "…"
    tags = f" tags={','.join(memory.tags)}" if memory.tags else ""
    return f"#{memory.id} [{memory.kind}] age={memory.age(now)}{score}{tags}: {text}"


def memory_tool(store: "MemoryStore") -> Tool:
    """The ``memory`` tool over ``store``."""

    def run(action: str, text: str | None = None, kind: str | None = None, tags: list[str] | None = None,
            query: str | None = None, k: int = 5, id: int | None = None, n: int = 10) -> ToolResult:
        given = {name for name, value in (("text", text), ("query", query), ("id", id)) if value is not None}
        stray = given - _FIELDS[action]
        if stray:
            raise ToolError(f"action={action} does not take {', '.join(sorted(stray))}",
                            hint=f"action={action} takes: {', '.join(sorted(_FIELDS[action]))}")
        now = time.time()
        if action == "store":
            if text is None:
                raise ToolError("action=store needs text", hint='e.g. {"action": "store", "text": "…", "kind": "lesson"}')
            result = store.add(text, kind or "fact", tags or ())
            said = {"added": "stored as", "duplicate": "already stored as",
                    "updated": "updated the similar memory"}[result.action]
            content = f"{said} #{result.memory.id}"
            if result.previous_text is not None:
                content += f" (it said: {' '.join(result.previous_text.split())[:PREVIEW_CHARS]})"
            return ToolResult(content, summary=f"memory {result.action} #{result.memory.id}",
                              data={"action": result.action, "id": result.memory.id})
        if action == "search":
            if query is None:
                raise ToolError("action=search needs query", hint='e.g. {"action": "search", "query": "how to run the tests"}')
            hits = store.search(query, k=k, kind=kind, tags=tags)
            if not hits:
                return ToolResult("no memories yet" if store.count() == 0 else "no memories match",
                                  summary="memory search: nothing found")
            lines = [_line(h.memory, now, f" score={h.score:.2f} sim={h.similarity:.2f}") for h in hits]
            return ToolResult("\n".join(lines), summary=f"memory search: {len(hits)} found",
                              data={"ids": [h.memory.id for h in hits]})
        if action == "forget":
            if id is None:
                raise ToolError("action=forget needs id", hint="search or list first to find the id")
            memory = store.forget(id)
            return ToolResult(f"forgot #{memory.id}: {' '.join(memory.text.split())[:PREVIEW_CHARS]}",
                              summary=f"memory forgot #{memory.id}")
        memories = store.list(n=n, kind=kind, tag=tags)
        if not memories:
            return ToolResult("no memories yet" if store.count() == 0 else "no memories match",
                              summary="memory list: empty")
        return ToolResult("\n".join(_line(m, now) for m in memories), summary=f"memory list: {len(memories)}")

    return Tool("memory", DESCRIPTION, _schema(), run, read_only=False)
