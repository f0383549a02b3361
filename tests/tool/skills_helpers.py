"""Helpers for the skill tests: skill sources, a registry with the loader, a word-count embedder."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boot.settings import Settings
from core import sandbox
from core.messages import ToolCall
from tool.registry import ToolRegistry
from tool.skills import SkillLoader, SkillRunner, promote_skill_tool


def require_bwrap() -> None:
    path, reason = sandbox.bwrap_problem()
    if path is None:
        pytest.skip(f"bubblewrap cannot run here: {reason}")


def skill_source(name: str = "add", body: str = "return a + b", *, params: str = "a: int, b: int",
                 args_doc: str | None = None, returns: str = "int", head: str = "", summary: str = "Add two numbers.") -> str:
    """A valid skill module: one function ``name`` with a Google-style docstring."""
    if args_doc is None:
        names = [p.split(":")[0].strip() for p in params.split(",") if p.strip()]
        args_doc = "\n".join(f"        {n}: the {n} value" for n in names)
    doc = f'"""{summary}\n\n    Args:\n{args_doc}\n    """' if args_doc else f'"""{summary}"""'
    body_lines = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    return f"{head}def {name}({params}) -> {returns}:\n    {doc}\n{body_lines}\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class Setup:
    """A workspace with a registry, the skill loader as provider, and ``promote_skill`` registered."""

    def __init__(self, root: Path, *, timeout_s: float = 30.0, embedder: Any = None, max_offered: int = 8,
                 background: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.settings = Settings(workspace=root, enable_files=False, tool_timeout_s=timeout_s)
        self.notices: list[str] = []
        self.registry = ToolRegistry(default_timeout_s=timeout_s)
        self.registry.on_notice = self.notices.append
        self.runner = SkillRunner(self.settings)
        self.loader = SkillLoader(self.settings, registry=self.registry, runner=self.runner, embedder=embedder,
                                  max_offered=max_offered, embed_in_background=background)
        self.registry.add_provider(self.loader)
        self.registry.register(promote_skill_tool(self.settings, registry=self.registry, runner=self.runner))

    @property
    def skills(self) -> Path:
        return self.root / "skills"

    def names(self, task: str | None = None) -> list[str]:
        return [t.name for t in self.registry.tools(task=task)]

    def call(self, name: str, **args: Any):
        return self.registry.execute(ToolCall(name, args, id="c1")).result

    def promote(self, **args: Any):
        return self.call("promote_skill", **args)


class WordEmbedder:
    """A tiny real embedder for ranking tests: one dimension per word of a fixed vocabulary."""

    name = "words"

    def __init__(self, vocabulary: list[str]) -> None:
        self.vocabulary = vocabulary
        self.calls = 0

    @property
    def dim(self) -> int:
        return len(self.vocabulary)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = text.lower().replace("_", " ").replace(":", " ").replace(".", " ").split()
            for j, word in enumerate(self.vocabulary):
                rows[i, j] = words.count(word)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return rows / norms
