"""Which skills to offer when there are many: those whose descriptions are nearest the task.

The embedder is made on first need (loading one costs seconds); description vectors are kept per
(name, description) and the task's vector per task, so a run's later steps cost one dot product.
Without an embedder (not installed, failed to load) the most recently used skills are offered.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

#: offered every turn when there are at most this many skills; above it, the nearest this many
MAX_OFFERED = 8

EmbedderFactory = Callable[[], Any]


class Relevance:
    """Picks ``limit`` skill names for a task; ``on_problem`` hears (once) why it fell back."""

    def __init__(self, factory: EmbedderFactory | None, *, limit: int = MAX_OFFERED,
                 on_problem: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self._factory = factory
        self._embedder: Any = None
        self._failed: str | None = None if factory is not None else "no embedder configured"
        self._on_problem = on_problem
        self._vectors: dict[tuple[str, str], Any] = {}
        self._query: tuple[str, Any] | None = None
        self._lock = threading.Lock()

    @property
    def problem(self) -> str | None:
        """Why relevance falls back to recent use, or None while the embedder works."""
        return self._failed

    def _embedder_or_none(self) -> Any:
        if self._embedder is None and self._failed is None and self._factory is not None:
            try:
                self._embedder = self._factory()
            except Exception as exc:  # a missing or broken model must not stop the agent
                self._fail(f"cannot make the embedder ({exc})")
        return self._embedder

    def _fail(self, why: str) -> None:
        self._failed = why
        self._embedder = None
        if self._on_problem is not None:
            self._on_problem(f"skills: {why}; offering the {self.limit} most recently used skills instead")

    def choose(self, task: str | None, skills: Sequence[tuple[str, str]], recent: Sequence[str]) -> list[str]:
        """The names to offer: all of them when they fit, else the nearest to ``task`` (or ``recent``).

        ``skills`` are (name, description); ``recent`` lists names most recently used first.
        """
        names = [name for name, _ in skills]
        if len(names) <= self.limit:
            return names
        with self._lock:
            chosen = self._nearest(task, skills) if task and task.strip() else None
        if chosen is None:
            order = {name: i for i, name in enumerate(recent)}
            chosen = sorted(names, key=lambda n: (order.get(n, len(order)), n))[: self.limit]
        return chosen

    def _nearest(self, task: str, skills: Sequence[tuple[str, str]]) -> list[str] | None:
        embedder = self._embedder_or_none()
        if embedder is None:
            return None
        import numpy as np  # only when skills are ranked

        try:
            missing = [(n, d) for n, d in skills if (n, d) not in self._vectors]
            if missing:
                rows = embedder.embed([f"{n.replace('_', ' ')}: {d}" for n, d in missing])
                self._vectors.update({key: rows[i] for i, key in enumerate(missing)})
            if self._query is None or self._query[0] != task:
                self._query = (task, embedder.embed([task])[0])
        except Exception as exc:  # a server embedder that went away, a model that broke
            self._fail(f"embedding the skill descriptions failed ({exc})")
            return None
        keep = {(n, d) for n, d in skills}
        self._vectors = {k: v for k, v in self._vectors.items() if k in keep}
        matrix = np.stack([self._vectors[(n, d)] for n, d in skills])
        scores = matrix @ self._query[1]
        ranked = sorted(range(len(skills)), key=lambda i: (-float(scores[i]), skills[i][0]))
        return [skills[i][0] for i in ranked[: self.limit]]
