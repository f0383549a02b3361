"""Which skills to offer when there are many: those whose descriptions are nearest the task.

The embedder is made on first need; loading one costs seconds (torch and the model), so by
default it loads in a background thread and the most recently used skills are offered until it
is ready. Description vectors are kept per (name, description) and the task's vector per task,
so a run's later steps cost one dot product. Without an embedder (not installed, failed to load)
the most recently used skills are offered, and the reason is told once.
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
                 on_problem: Callable[[str], None] | None = None, background: bool = True) -> None:
        self.limit = limit
        self._factory = factory
        self._background = background
        self._embedder: Any = None
        self._failed: str | None = None if factory is not None else "no embedder configured"
        self._untold: str | None = None  # a failure not reported yet (reported from the caller's thread)
        self._on_problem = on_problem
        self._loading: threading.Thread | None = None
        self._vectors: dict[tuple[str, str], Any] = {}
        self._query: tuple[str, Any] | None = None
        self._lock = threading.RLock()

    @property
    def problem(self) -> str | None:
        """Why relevance falls back to recent use, or None while the embedder works (or loads)."""
        return self._failed

    @property
    def ready(self) -> bool:
        """True once the embedder is loaded (ranking by meaning is possible)."""
        return self._embedder is not None

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait for a background load to finish; True when the embedder is ready."""
        thread = self._loading
        if thread is not None:
            thread.join(timeout_s)
        return self.ready

    def _load(self) -> None:
        try:
            embedder = self._factory() if self._factory is not None else None
            if embedder is not None:
                embedder.embed(["warm up"])  # lazy embedders load their model on the first call
        except Exception as exc:  # a missing or broken model must not stop the agent
            self._fail(f"cannot make the embedder ({exc})")
            return
        with self._lock:
            self._embedder = embedder

    def _fail(self, why: str) -> None:
        with self._lock:
            self._failed = why
            self._embedder = None
            self._untold = f"skills: {why}; offering the {self.limit} most recently used skills instead"

    def _tell(self) -> None:
        message, self._untold = self._untold, None
        if message and self._on_problem is not None:
            self._on_problem(message)

    def _embedder_now(self) -> Any:
        """The embedder if it is ready; starts loading it (in the background by default) otherwise."""
        if self._embedder is not None or self._failed is not None or self._factory is None:
            return self._embedder
        if not self._background:
            self._load()
        elif self._loading is None:
            self._loading = threading.Thread(target=self._load, daemon=True, name="skills-embedder")
            self._loading.start()
        return self._embedder

    def choose(self, task: str | None, skills: Sequence[tuple[str, str]], recent: Sequence[str]) -> list[str]:
        """The names to offer: all of them when they fit, else the nearest to ``task`` (or ``recent``).

        ``skills`` are (name, description); ``recent`` lists names most recently used first.
        """
        names = [name for name, _ in skills]
        if len(names) <= self.limit:
            return names
        with self._lock:
            chosen = self._nearest(task, skills) if task and task.strip() else None
        self._tell()
        if chosen is None:
            order = {name: i for i, name in enumerate(recent)}
            chosen = sorted(names, key=lambda n: (order.get(n, len(order)), n))[: self.limit]
        return chosen

    def _nearest(self, task: str, skills: Sequence[tuple[str, str]]) -> list[str] | None:
        embedder = self._embedder_now()
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
