"""Long-term memory: SQLite is the source of truth, FAISS finds meaning, FTS5 finds words.

One database per workspace (``workspace/.agent/memory.db``, WAL mode) holds every memory, its
embedding (float32 blob), an FTS5 index kept in step by triggers, and the history of changes.
The FAISS file beside it (``memory.faiss``) is a cache: when it is missing, damaged, made by
another model, or out of step with the database, it is rebuilt from the stored embeddings
without re-embedding anything.

Every write is one ``BEGIN IMMEDIATE`` transaction that bumps a write *generation* in
``memory_meta`` and stamps the rows it touches with it. A process brings its in-memory index up
to date by reading only the rows stamped after the generation it last saw, so a second process's
writes become searchable at its next search, and a process killed mid-batch loses only the
batch that had not committed. See ``docts/memory.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np

from core.errors import ConfigError, ToolError
from store.embed import Embedder
from store.migrations import migrate
from store.vectors import IndexCache, VectorIndex

KINDS = ("fact", "lesson", "preference", "snippet")
DB_NAME = "memory.db"
STATE_DIR = ".agent"
#: cosine similarity above which a new memory of the same kind replaces an old one
NEAR_DUPLICATE = 0.92
#: the constant of reciprocal-rank fusion: 60 is the value from Cormack et al. that everyone uses
RRF_K = 60
MAX_TEXT_CHARS = 8000
#: not core.tokens' high-erring 3.2: recall's budget is a soft share of the prompt (tests pin 4)
CHARS_PER_TOKEN = 4
#: recall leaves out hits less similar than this (unless the words match too, see recall())
RECALL_MIN_SIMILARITY = 0.35
#: a rebuild of at least this many vectors shows a progress bar
PROGRESS_FROM = 5000
_TAG = re.compile(r"^[\w.+#:/-]{1,40}$")
_WORD = re.compile(r"[^\W_]+")
#: words left out of the keyword query: in a question they match nearly every memory and drown
#: the words that matter in the rank fusion (a query made only of these keeps them)
STOPWORDS = frozenset("""a an and are as at be by can could do does did for from how i if in into is it its
me my of on or our should so that the their them then there these this to was we were what when where which
who why will with would you your""".split())

Action = Literal["added", "duplicate", "updated"]


class BadMemoryInput(ToolError):
    """A memory, query or argument that cannot be used as given."""


class MemoryNotFound(ToolError):
    """No live memory with that id."""


@dataclass(frozen=True)
class Memory:
    id: int
    text: str
    kind: str
    tags: tuple[str, ...]
    created: float
    updated: float
    last_used: float | None = None
    deleted: bool = False

    def age(self, now: float | None = None) -> str:
        return format_age((now or time.time()) - self.updated)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data


@dataclass(frozen=True)
class MemoryInput:
    """What to remember; ``created``/``updated`` are kept when importing."""

    text: str
    kind: str = "fact"
    tags: tuple[str, ...] | list[str] | str = ()
    created: float | None = None
    updated: float | None = None


@dataclass(frozen=True)
class AddResult:
    """What :meth:`MemoryStore.add` did: ``added``, ``duplicate`` (already stored) or ``updated``."""

    action: Action
    memory: Memory
    similarity: float | None = None  # to the memory it updated (near-duplicate)
    previous_text: str | None = None


@dataclass(frozen=True)
class Hit:
    memory: Memory
    score: float  # fused reciprocal rank, 1.0 = first in both lists
    similarity: float  # cosine similarity of query and memory
    keyword: bool  # the words of the query matched (FTS5)


@dataclass(frozen=True)
class ImportSummary:
    added: int = 0
    updated: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class IndexReport:
    """What :meth:`MemoryStore.reindex` did."""

    vectors: int = 0
    embedded: int = 0
    seconds: float = 0.0


# --- small pure helpers ------------------------------------------------------------------------

def content_hash(text: str) -> str:
    """The hash that makes two memories exact duplicates: same words, any spacing."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def clean_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadMemoryInput("a memory needs some text", hint="give the fact, lesson or preference in one or two sentences")
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS:
        raise BadMemoryInput(f"the text is {len(text)} characters; a memory holds at most {MAX_TEXT_CHARS}",
                             hint="store the lesson itself; long code belongs in a file in the workspace")
    return text


def clean_kind(kind: Any) -> str:
    kind = (kind or "fact").strip().lower() if isinstance(kind, str) else kind
    if kind not in KINDS:
        raise BadMemoryInput(f"unknown kind {kind!r}", hint=f"use one of: {', '.join(KINDS)}")
    return kind


def clean_tags(tags: Any) -> tuple[str, ...]:
    """Tags as a sorted tuple of lower-case words; accepts a list or a comma-separated string."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = tags.split(",")
    found = set()
    for tag in tags:
        if not isinstance(tag, str):
            raise BadMemoryInput(f"a tag must be text, got {tag!r}", hint='give tags like ["python", "tests"]')
        tag = "-".join(tag.strip().lower().split())
        if not tag:
            continue
        if not _TAG.match(tag):
            raise BadMemoryInput(f"bad tag {tag!r}", hint="a tag is one word of letters, digits and . _ - + # : / (at most 40)")
        found.add(tag)
    return tuple(sorted(found))


def fts_query(text: str) -> str | None:
    """The user's words as a safe FTS5 query: each whitespace-separated piece a quoted phrase, OR-ed.

    Only letters and digits reach FTS5, so no input can be FTS5 syntax (``NEAR``, ``*``, ``:``,
    quotes). An identifier like ``ERR_CONN_4411`` becomes the phrase ``"ERR CONN 4411"``, which
    matches exactly those tokens in that order.
    """
    phrases = []
    for piece in text.split():
        words = _WORD.findall(piece)
        if words:
            phrases.append('"' + " ".join(words) + '"')
    content = [p for p in phrases if p.strip('"').lower() not in STOPWORDS]
    return " OR ".join(dict.fromkeys(content or phrases)) or None


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("y", 365 * 86400), ("mo", 30 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return "now"


def _tags_column(tags: Sequence[str]) -> str:
    return "," + ",".join(tags) + ("," if tags else "")


def _row_to_memory(row: sqlite3.Row) -> Memory:
    return Memory(row["id"], row["text"], row["kind"], tuple(t for t in row["tags"].split(",") if t),
                  row["created"], row["updated"], row["last_used"], bool(row["deleted"]))


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def default_path(workspace: str | os.PathLike[str]) -> Path:
    """Where a workspace keeps its memories (the FAISS file goes beside it)."""
    return Path(workspace) / STATE_DIR / DB_NAME


class MemoryStore:
    """Memories of one workspace. Safe to share between threads; other processes may open it too."""

    def __init__(self, path: str | os.PathLike[str], embedder: Embedder, *,
                 index_path: str | os.PathLike[str] | None = None, near_duplicate: float = NEAR_DUPLICATE,
                 progress: bool | None = None) -> None:
        self.path = Path(path)
        self.index_path = Path(index_path) if index_path else self.path.with_suffix(".faiss")
        self.embedder = embedder
        self.near_duplicate = near_duplicate
        self.show_progress = sys.stderr.isatty() if progress is None else progress
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions start where we say; the timeout waits out a writer
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL under WAL: a killed process loses nothing committed; only a power cut may
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA busy_timeout = 30000")
            self.schema_version = migrate(self._db)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot open the memory database {self.path}: {exc}",
                              hint="if the file is damaged, move it away; `memory import` restores an export") from None
        self.store_id = self._meta("store_id")
        self._cache = IndexCache(self._db, self.index_path, store_id=self.store_id, embedder=embedder,
                                 progress=self._progress)

    @classmethod
    def for_workspace(cls, workspace: str | os.PathLike[str], embedder: Embedder, **kwargs: Any) -> "MemoryStore":
        return cls(default_path(workspace), embedder, **kwargs)

    def close(self) -> None:
        """Save the index if this process changed it, and close the database."""
        with self._lock:
            if self._db is None:
                return
            self._cache.save()
            self._db.close()
            self._db = None  # type: ignore[assignment]

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- database helpers ----------------------------------------------------------------------

    def _meta(self, key: str) -> str:
        return self._db.execute("SELECT value FROM memory_meta WHERE key = ?", (key,)).fetchone()[0]

    def generation(self) -> int:
        """How many write transactions the database has seen (any process)."""
        with self._lock:
            return int(self._meta("generation"))

    @contextmanager
    def _write(self) -> Iterator[int]:
        """One write transaction; yields its generation, which the rows it touches must carry."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                gen = self._db.execute("UPDATE memory_meta SET value = CAST(value AS INTEGER) + 1 "
                                       "WHERE key = 'generation' RETURNING CAST(value AS INTEGER)").fetchone()[0]
                yield gen
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _history(self, memory_id: int, action: str, text: str | None, kind: str | None, tags: str | None,
                 detail: str = "") -> None:
        self._db.execute("INSERT INTO memory_history (memory_id, action, text, kind, tags, at, detail) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", (memory_id, action, text, kind, tags, time.time(), detail))

    def _filter_sql(self, kind: str | None, tags: Iterable[str] | None, alias: str = "") -> tuple[str, list[Any]]:
        """``AND …`` conditions for a kind and tags (all must be present)."""
        p = f"{alias}." if alias else ""
        sql, args = "", []
        if kind is not None:
            sql += f" AND {p}kind = ?"
            args.append(clean_kind(kind))
        for tag in clean_tags(tags):
            sql += f" AND instr({p}tags, ?) > 0"
            args.append(f",{tag},")
        return sql, args

    # --- the vector index (a cache of the embeddings in SQLite) --------------------------------

    def _vectors(self) -> VectorIndex:
        """The index, loaded or rebuilt on first use and caught up with every process's writes."""
        with self._lock:
            if not self._cache.loaded:
                self._embed_missing()
            return self._cache.get()

    def _embed_missing(self, everything: bool = False) -> int:
        """Embed live rows that have no vector from the current model (old schema, imports, model change)."""
        name = self.embedder.name
        if everything:
            todo = self._db.execute("SELECT id, text, hash FROM memories WHERE deleted = 0 ORDER BY id").fetchall()
        else:
            # ranges on the embed_model index find the rows without reading 100k embedding blobs
            todo = self._db.execute(
                "SELECT id, text, hash FROM memories WHERE id IN (SELECT id FROM memories INDEXED BY memories_by_model "
                "WHERE (embed_model IS NULL OR embed_model < ? OR embed_model > ?) AND deleted = 0) ORDER BY id",
                (name, name)).fetchall()
        if not todo:
            return 0
        with self._progress(len(todo), "embedding memories") as advance:
            for start in range(0, len(todo), 256):
                chunk = todo[start:start + 256]
                vectors = self.embedder.embed([r["text"] for r in chunk])
                with self._write() as gen:
                    for row, vector in zip(chunk, vectors):
                        # the hash guard skips a row another process changed meanwhile
                        self._db.execute("UPDATE memories SET embedding = ?, embed_model = ?, gen = ? "
                                         "WHERE id = ? AND hash = ?", (_blob(vector), name, gen, row["id"], row["hash"]))
                advance(len(chunk))
        return len(todo)

    @contextmanager
    def _progress(self, total: int, description: str) -> Iterator[Callable[[int], None]]:
        if not self.show_progress or total < PROGRESS_FROM:
            yield lambda n: None
            return
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    # --- writing -------------------------------------------------------------------------------

    def add(self, text: str, kind: str = "fact", tags: Sequence[str] | str = ()) -> AddResult:
        """Remember ``text``; an exact duplicate is not stored twice, a near-duplicate updates the old one."""
        return self.add_many([MemoryInput(text, kind, tags)])[0]

    def add_many(self, items: Iterable[MemoryInput], *, batch_size: int = 256, vectors: np.ndarray | None = None,
                 near_duplicates: bool = True) -> list[AddResult]:
        """Add memories in batches: one embedding call and one transaction per batch.

        ``vectors``: precomputed embeddings (one row per item, from this store's model) instead of
        embedding the texts. ``near_duplicates=False`` skips the near-duplicate search (bulk loads).
        """
        cleaned = []
        for item in items:
            text = clean_text(item.text)
            cleaned.append((text, clean_kind(item.kind), clean_tags(item.tags), content_hash(text),
                            item.created, item.updated))
        if vectors is not None:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) != len(cleaned) or vectors.shape[1] != self.embedder.dim:
                raise ValueError(f"expected {len(cleaned)} vectors of size {self.embedder.dim}, got shape {vectors.shape}")
        results: list[AddResult] = []
        with self._lock, self._progress(len(cleaned), "adding memories") as advance:
            for start in range(0, len(cleaned), batch_size):
                chunk = cleaned[start:start + batch_size]
                given = None if vectors is None else vectors[start:start + batch_size]
                results.extend(self._add_batch(chunk, given, near_duplicates))
                advance(len(chunk))
        return results

    def _add_batch(self, chunk: list[tuple[Any, ...]], given: np.ndarray | None,
                   near_duplicates: bool) -> list[AddResult]:
        db = self._db
        marks = ",".join("?" * len(chunk))
        known = {r[0] for r in db.execute(f"SELECT hash FROM memories WHERE deleted = 0 AND hash IN ({marks})",
                                          [c[3] for c in chunk])}
        # the content hash spares embedding what is already stored
        todo = [i for i, c in enumerate(chunk) if c[3] not in known]
        vecs: dict[int, np.ndarray] = {}
        if todo:
            if given is not None:
                from store.embed import normalise

                matrix = normalise(given[todo])
            else:
                matrix = self.embedder.embed([chunk[i][0] for i in todo])
            vecs = {i: matrix[n] for n, i in enumerate(todo)}
        near: dict[int, tuple[int, float]] = {}  # position -> (stored id, similarity)
        near_in_batch: dict[int, tuple[int, float]] = {}  # position -> (earlier position, similarity)
        if near_duplicates and todo:
            matrix = np.stack([vecs[i] for i in todo])
            index = self._vectors()
            if len(index):
                found, _ = index.search_many(matrix, 4)
                wanted = sorted(set(found[found >= 0].tolist()))
                stored = {r["id"]: r for r in db.execute(
                    f"SELECT id, embedding, embed_model, kind, deleted FROM memories WHERE id IN ({','.join('?' * len(wanted))})",
                    wanted)} if wanted else {}
                for n, pos in enumerate(todo):
                    # decided on exact similarity: the index's 8-bit scores are only for finding candidates
                    scored = [(self._similarity(stored[mid], vecs[pos]), mid) for mid in found[n].tolist()
                              if mid in stored and not stored[mid]["deleted"] and stored[mid]["kind"] == chunk[pos][1]]
                    if scored and max(scored)[0] >= self.near_duplicate:
                        sim, mid = max(scored)
                        near[pos] = (mid, sim)
            within = matrix @ matrix.T
            for a in range(len(todo)):
                for b in range(a):
                    if within[a, b] >= self.near_duplicate and chunk[todo[a]][1] == chunk[todo[b]][1]:
                        near_in_batch[todo[a]] = (todo[b], float(within[a, b]))
                        break
        results: list[AddResult] = []
        with self._write() as gen:
            placed: dict[int, int] = {}  # position -> id it ended up in
            for pos, (text, kind, tags, digest, created, updated) in enumerate(chunk):
                now = time.time()
                row = db.execute("SELECT * FROM memories WHERE deleted = 0 AND hash = ?", (digest,)).fetchone()
                if row is not None:
                    merged = tuple(sorted(set(row["tags"].strip(",").split(",")) - {""} | set(tags)))
                    if _tags_column(merged) != row["tags"]:
                        db.execute("UPDATE memories SET tags = ?, updated = ?, gen = ? WHERE id = ?",
                                   (_tags_column(merged), now, gen, row["id"]))
                        self._history(row["id"], "tag", None, None, _tags_column(merged))
                    placed[pos] = row["id"]
                    results.append(AddResult("duplicate", self._get_row(row["id"])))
                    continue
                target: tuple[int, float] | None = None
                if pos in near_in_batch and near_in_batch[pos][0] in placed:
                    target = (placed[near_in_batch[pos][0]], near_in_batch[pos][1])
                elif pos in near:
                    target = near[pos]
                old = None
                if target is not None:
                    old = db.execute("SELECT * FROM memories WHERE id = ? AND deleted = 0 AND kind = ?",
                                     (target[0], kind)).fetchone()
                if old is not None:
                    merged = tuple(sorted(set(old["tags"].strip(",").split(",")) - {""} | set(tags)))
                    db.execute("UPDATE memories SET text = ?, hash = ?, tags = ?, updated = ?, embedding = ?, "
                               "embed_model = ?, gen = ? WHERE id = ?",
                               (text, digest, _tags_column(merged), updated or now, _blob(vecs[pos]),
                                self.embedder.name, gen, old["id"]))
                    self._history(old["id"], "update", text, kind, _tags_column(merged),
                                  json.dumps({"previous": old["text"], "similarity": round(target[1], 4)}))
                    placed[pos] = old["id"]
                    results.append(AddResult("updated", self._get_row(old["id"]), target[1], old["text"]))
                    continue
                cur = db.execute("INSERT INTO memories (text, kind, tags, hash, created, updated, embedding, "
                                 "embed_model, gen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 (text, kind, _tags_column(tags), digest, created or now, updated or created or now,
                                  _blob(vecs[pos]) if pos in vecs else None,
                                  self.embedder.name if pos in vecs else None, gen))
                new_id = int(cur.lastrowid)
                self._history(new_id, "add", text, kind, _tags_column(tags))
                placed[pos] = new_id
                results.append(AddResult("added", self._get_row(new_id)))
        self._cache.refresh()
        return results

    def forget(self, memory_id: int) -> Memory:
        """Hide a memory from search, recall and lists; its id is never given to another memory."""
        memory_id = self._clean_id(memory_id)
        with self._write() as gen:
            row = self._db.execute("SELECT * FROM memories WHERE id = ? AND deleted = 0", (memory_id,)).fetchone()
            if row is None:
                raise MemoryNotFound(f"no memory with id {memory_id}", hint="list memories to see their ids")
            self._db.execute("UPDATE memories SET deleted = 1, embedding = NULL, embed_model = NULL, updated = ?, gen = ? "
                             "WHERE id = ?",
                             (time.time(), gen, memory_id))
            self._history(memory_id, "forget", row["text"], row["kind"], row["tags"])
        self._cache.refresh()
        return _row_to_memory(row)

    # --- reading -------------------------------------------------------------------------------

    @staticmethod
    def _clean_id(memory_id: Any) -> int:
        if isinstance(memory_id, bool) or not isinstance(memory_id, int):
            try:
                memory_id = int(str(memory_id).lstrip("#"))
            except ValueError:
                raise BadMemoryInput(f"a memory id is a number, got {memory_id!r}",
                                     hint="use the id shown by search or list") from None
        return memory_id

    def _get_row(self, memory_id: int) -> Memory:
        return _row_to_memory(self._db.execute("SELECT * FROM memories WHERE id = ?", (memory_id,)).fetchone())

    def get(self, memory_id: int) -> Memory:
        memory_id = self._clean_id(memory_id)
        with self._lock:
            row = self._db.execute("SELECT * FROM memories WHERE id = ? AND deleted = 0", (memory_id,)).fetchone()
        if row is None:
            raise MemoryNotFound(f"no memory with id {memory_id}", hint="list memories to see their ids")
        return _row_to_memory(row)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM memories WHERE deleted = 0").fetchone()[0])

    def list(self, n: int = 20, kind: str | None = None, tag: str | Sequence[str] | None = None) -> list[Memory]:
        """The ``n`` most recently added or changed memories (with all the tags in ``tag``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BadMemoryInput(f"n must be a positive number, got {n!r}")
        filt, args = self._filter_sql(kind, tag)
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM memories WHERE deleted = 0{filt} ORDER BY updated DESC, id DESC "
                                    "LIMIT ?", (*args, n)).fetchall()
        return [_row_to_memory(r) for r in rows]

    def search(self, query: str, k: int = 5, kind: str | None = None, tags: Sequence[str] | str | None = None) -> list[Hit]:
        """Hybrid search: BM25 (FTS5) and vector similarity, fused by reciprocal rank."""
        if not isinstance(query, str) or not query.strip():
            raise BadMemoryInput("the search query is empty", hint="say what you are looking for in a few words")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100:
            raise BadMemoryInput(f"k must be between 1 and 100, got {k!r}")
        depth = max(4 * k, 40)
        with self._lock:
            filt, args = self._filter_sql(kind, tags, "m")
            if self.count() == 0:  # nothing to find: spare loading the model
                return []
            words: list[int] = []
            match = fts_query(query)
            if match:
                words = [r[0] for r in self._db.execute(
                    "SELECT m.id FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid "
                    f"WHERE memories_fts MATCH ? AND m.deleted = 0{filt} ORDER BY memories_fts.rank LIMIT ?",
                    (match, *args, depth))]
            qv = self.embedder.embed([query.strip()])[0]
            index = self._vectors()
            allowed = None
            if filt:
                allowed = np.array([r[0] for r in self._db.execute(
                    f"SELECT m.id FROM memories m WHERE m.deleted = 0{filt}", args)], dtype=np.int64)
            vids, _ = index.search(qv, depth, allowed)
            candidates = list(dict.fromkeys([*words, *vids.tolist()]))
            # the index's scores are approximate (8-bit codes): rank the candidates by the exact vectors
            sims = {r[0]: self._similarity(r, qv) for r in self._db.execute(
                "SELECT id, embedding, embed_model FROM memories WHERE deleted = 0 AND id IN "
                f"({','.join('?' * len(candidates))})", candidates)} if candidates else {}
            near = sorted((mid for mid in vids.tolist() if mid in sims), key=lambda mid: -sims[mid])
            fused: dict[int, float] = {}
            for ranked in ([mid for mid in words if mid in sims], near):  # a row forgotten meanwhile drops out
                for rank, mid in enumerate(ranked):
                    fused[mid] = fused.get(mid, 0.0) + 1.0 / (RRF_K + rank + 1)
            # on a tie the exact words win: a matching identifier beats a neighbour in meaning
            matched = set(words)
            top = sorted(fused, key=lambda mid: (-fused[mid], mid not in matched, mid))[:k]
            rows = {r["id"]: r for r in self._db.execute(
                f"SELECT * FROM memories WHERE id IN ({','.join('?' * len(top))})", top)} if top else {}
        best = 2.0 / (RRF_K + 1)
        return [Hit(_row_to_memory(rows[mid]), round(fused[mid] / best, 4), round(sims[mid], 4), mid in matched)
                for mid in top]

    def _similarity(self, row: Sequence[Any], query: np.ndarray) -> float:
        """Exact cosine similarity of a ``(id, embedding, embed_model, …)`` row's vector and ``query``."""
        if row[1] is None or row[2] != self.embedder.name:
            return 0.0
        return float(np.frombuffer(row[1], dtype=np.float32) @ query)

    def recall(self, task: str, budget_tokens: int, count_tokens: Callable[[str], int] | None = None,
               k: int = 8) -> str:
        """The memories most relevant to ``task``, formatted for the system prompt within the budget.

        Memories too unlike the task are left out, so an unrelated task gets no section at all.
        ``count_tokens`` defaults to ~4 characters per token. Marks what it returns as used.
        """
        if budget_tokens <= 0 or not isinstance(task, str) or not task.strip() or self.count() == 0:
            return ""
        count = count_tokens or (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN))
        hits = [h for h in self.search(task, k=k)
                if h.similarity >= RECALL_MIN_SIMILARITY or (h.keyword and h.similarity >= RECALL_MIN_SIMILARITY / 2)]
        header = "Memories from earlier sessions (they may be out of date; what you see in the workspace wins):"
        lines: list[str] = []
        used: list[int] = []
        for hit in hits:
            line = f"- [{hit.memory.kind} #{hit.memory.id}] {' '.join(hit.memory.text.split())}"
            if count("\n".join([header, *lines, line])) <= budget_tokens:
                lines.append(line)
                used.append(hit.memory.id)
        if not lines:
            return ""
        with self._lock:
            self._db.execute(f"UPDATE memories SET last_used = ? WHERE id IN ({','.join('?' * len(used))})",
                             (time.time(), *used))
        return "\n".join([header, *lines])

    # --- files and maintenance -----------------------------------------------------------------

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every live memory to ``path`` as JSON lines (oldest first); returns how many."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with self._lock:
            rows = self._db.execute("SELECT * FROM memories WHERE deleted = 0 ORDER BY id").fetchall()
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(_row_to_memory(row).to_json(), ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            raise BadMemoryInput(f"cannot write {path}: {exc.strerror}", hint="choose a folder you can write to") from None
        finally:
            tmp.unlink(missing_ok=True)
        return len(rows)

    def import_(self, path: str | os.PathLike[str]) -> ImportSummary:
        """Add the memories of a JSON-lines file (as written by :meth:`export`); checks every line first."""
        items = []
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadMemoryInput(f"cannot read {path}: {exc}", hint="give a JSON-lines file written by `memory export`") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict) or "text" not in data:
                    raise ValueError("expected an object with a 'text' field")
                stamp = lambda key: float(data[key]) if data.get(key) is not None else None  # noqa: E731
                item = MemoryInput(clean_text(data["text"]), clean_kind(data.get("kind", "fact")),
                                   clean_tags(data.get("tags")), stamp("created"), stamp("updated"))
            except (ValueError, TypeError, BadMemoryInput) as exc:
                raise BadMemoryInput(f"{path}, line {number}: {exc}",
                                     hint="each line is one JSON object like {\"text\": …, \"kind\": \"lesson\", "
                                          "\"tags\": [\"…\"]}; nothing was imported") from None
            items.append(item)
        results = self.add_many(items)
        return ImportSummary(added=sum(r.action == "added" for r in results),
                             updated=sum(r.action == "updated" for r in results),
                             duplicates=sum(r.action == "duplicate" for r in results))

    def reindex(self, reembed: bool = False) -> IndexReport:
        """Rebuild the FTS5 index and the vector index from the memories table.

        ``reembed``: compute every embedding again (after changing the model); otherwise only
        memories without a vector from the current model are embedded.
        """
        with self._lock:
            with self._write():
                self._db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('delete-all')")
                self._db.execute("INSERT INTO memories_fts (rowid, text) SELECT id, text FROM memories WHERE deleted = 0")
            start = time.perf_counter()
            embedded = self._embed_missing(everything=reembed)
            vectors = self._cache.rebuild()
            return IndexReport(vectors=vectors, embedded=embedded, seconds=time.perf_counter() - start)

    def warm(self) -> int:
        """Load (or rebuild) the vector index now rather than at the first search; returns its size."""
        return len(self._vectors())

    def check(self) -> dict[str, Any]:
        """SQLite's integrity check, and whether the vector index matches the database."""
        with self._lock:
            integrity = [r[0] for r in self._db.execute("PRAGMA integrity_check")]
            index = self._vectors()
            return {"integrity": integrity, "memories": self.count(), "vectors": len(index),
                    "index_in_step": self._cache.in_step()}


class RecallSection:
    """A ``flow.prompt.PromptSection``: recalled memories for a task, worked out once per task."""

    def __init__(self, store: MemoryStore, budget_tokens: int, count_tokens: Callable[[str], int] | None = None) -> None:
        self.store = store
        self.budget_tokens = budget_tokens
        self.count_tokens = count_tokens
        self._key: tuple[str, str] | None = None
        self._text = ""

    def __call__(self, task: str, session_id: str) -> str:
        if (task, session_id) != self._key:
            self._text = self.store.recall(task, self.budget_tokens, self.count_tokens)
            self._key = (task, session_id)
        return self._text
