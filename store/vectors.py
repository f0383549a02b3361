"""The FAISS index of memory vectors: inner product, ids = SQLite row ids, a file on disk.

:class:`VectorIndex` is the index and its file; :class:`IndexCache` keeps one in step with the
memories table (load, catch up with other processes' writes, rebuild, save).

The index is a cache of what SQLite holds. Its file starts with a small JSON header saying which
database (``store_id``), which write generation, which model and how many vectors it reflects,
then the FAISS index itself; the whole file is written to a temporary name and renamed into
place, so a reader sees either the old file or the new one, never half of one.

The index is a brute-force scan over vectors stored as 8-bit codes on a fixed [-1, 1] grid
(``IndexScalarQuantizer``, ``QT_8bit_uniform``): the components of a unit vector lie in that range
whatever the model, so the quantizer needs no training data and never goes stale; a similarity
is off by a few thousandths at most, and the store re-scores the candidates it keeps with the
exact float32 vectors from SQLite. Against a float32 flat index it scans a quarter of the bytes
(about 5x faster at 100,000 vectors) and supports removal; HNSW searches faster still but takes
a minute or more to build at 100k and cannot remove vectors (``bench/memory_bench.py``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager

import numpy as np

if TYPE_CHECKING:
    from store.embed import Embedder

MAGIC = b"LCMEMVEC"
FORMAT = 2  # 1: float32 flat (never released)
#: FAISS runs on one thread: on shared cores its OpenMP pool made searches ~5x slower
SEARCH_THREADS = 1


class IndexUnreadable(Exception):
    """The index file is missing, truncated, from another format, or not a FAISS index."""


def id_checksum(ids: np.ndarray) -> int:
    """An order-free checksum of row ids; :meth:`MemoryStore` computes the same sum in SQL."""
    ids = np.asarray(ids, dtype=np.int64)
    return int(((ids * 2654435761) % 4294967296).sum()) if ids.size else 0


#: the same checksum over the live, embedded rows of the memories table
SQL_ID_CHECKSUM = "coalesce(sum((id * 2654435761) % 4294967296), 0)"


def _faiss() -> Any:
    import faiss  # loaded when an index is first needed, not when ``store`` is imported

    # set once for the process, not around each call: resizing the OpenMP pool per search cost
    # more (~7 ms) than the search itself
    if faiss.omp_get_max_threads() != SEARCH_THREADS:
        faiss.omp_set_num_threads(SEARCH_THREADS)
    return faiss


class VectorIndex:
    """Unit vectors keyed by int64 ids, searched by inner product (cosine similarity)."""

    def __init__(self, dim: int, index: Any = None) -> None:
        faiss = _faiss()
        self.dim = int(dim)
        if index is None:
            codes = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit_uniform,
                                               faiss.METRIC_INNER_PRODUCT)
            # "training" a uniform quantizer only sets its range: [-1, 1] holds every unit vector
            codes.train(np.stack([np.full(self.dim, -1.0, np.float32), np.full(self.dim, 1.0, np.float32)]))
            index = faiss.IndexIDMap2(codes)
        self._index = index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self._index.id_map).astype(np.int64)

    def checksum(self) -> int:
        return id_checksum(self.ids())

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under ids that are not in the index (use :meth:`remove` first to replace)."""
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of size {vectors.shape[-1]} do not fit an index of size {self.dim}")
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0 or len(self) == 0:
            return 0
        return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest ids and their similarities for one query vector, best first.

        ``allowed``: only these ids may be returned (a filter by kind or tag).
        """
        faiss = _faiss()
        k = min(int(k), len(self))
        if k <= 0 or (allowed is not None and len(allowed) == 0):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64)))
        scores, ids = self._index.search(q, k, params=params)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep]

    def search_many(self, queries: np.ndarray, k: int, chunk_rows: int = 16384) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, similarities)``, each of shape ``(len(queries), k)``, best first (approximate scores).

        Done with numpy on FAISS's own codes: for a batch of queries the matrix product through
        numpy's BLAS was ~10x faster here than FAISS's bundled one.
        """
        faiss = _faiss()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n, k = len(self), min(int(k), len(self))
        best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        best_i = np.full((len(queries), k), -1, dtype=np.int64)
        if k <= 0 or len(queries) == 0:
            return best_i, best_s
        quantizer = faiss.downcast_index(self._index.index)
        codes = faiss.vector_to_array(quantizer.codes).reshape(n, self.dim)
        vmin, vdiff = faiss.vector_to_array(quantizer.sq.trained)[:2]
        # a code c stands for vmin + (c + 0.5) * vdiff / 255, so q·x = step * (q·c) + offset(q)
        step = vdiff / 255.0
        offset = queries.sum(axis=1, keepdims=True) * (vmin + 0.5 * step)
        ids = self.ids()
        for start in range(0, n, chunk_rows):
            scores = step * (queries @ codes[start:start + chunk_rows].astype(np.float32).T) + offset
            take = min(k, scores.shape[1])
            part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            both_s = np.concatenate([best_s, np.take_along_axis(scores, part, axis=1)], axis=1)
            both_i = np.concatenate([best_i, ids[start + part]], axis=1)
            order = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(both_s, order, axis=1), np.take_along_axis(both_i, order, axis=1)
        return best_i, best_s

    # --- the file ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        """Write header and index to ``path`` atomically (temporary file, fsync, rename)."""
        faiss = _faiss()
        path = Path(path)
        head = json.dumps({**header, "format": FORMAT, "dim": self.dim, "count": len(self)}).encode()
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + struct.pack("<I", len(head)) + head)
                writer = faiss.PyCallbackIOWriter(f.write)
                faiss.write_index(self._index, writer)
                del writer  # flushes FAISS's buffer into f before it closes
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def load_header(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Only the header of an index file (cheap: the vectors are not read)."""
        try:
            with open(path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise IndexUnreadable(f"{path} is not a memory index file")
                (size,) = struct.unpack("<I", f.read(4))
                return json.loads(f.read(size))
        except IndexUnreadable:
            raise
        except Exception as exc:  # missing, truncated, not JSON: the caller writes a fresh file
            raise IndexUnreadable(f"{path}: {type(exc).__name__}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple["VectorIndex", dict[str, Any]]:
        """The index in ``path`` and its header; :class:`IndexUnreadable` when it cannot be used."""
        faiss = _faiss()
        try:
            with open(path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise IndexUnreadable(f"{path} is not a memory index file")
                (size,) = struct.unpack("<I", f.read(4))
                header = json.loads(f.read(size))
                if header.get("format") != FORMAT:
                    raise IndexUnreadable(f"{path} has index format {header.get('format')}, expected {FORMAT}")
                reader = faiss.PyCallbackIOReader(f.read)
                index = faiss.read_index(reader)
                del reader
        except FileNotFoundError:
            raise IndexUnreadable(f"{path} does not exist") from None
        except IndexUnreadable:
            raise
        except Exception as exc:  # FAISS raises RuntimeError, json ValueError, struct error…: all mean "rebuild"
            raise IndexUnreadable(f"{path} is damaged: {type(exc).__name__}: {str(exc)[:200]}") from None
        if not hasattr(index, "id_map") or index.d != header.get("dim") or index.ntotal != header.get("count"):
            raise IndexUnreadable(f"{path} does not match its own header")
        return cls(index.d, index), header


def remove_stale_temporaries(path: str | os.PathLike[str]) -> None:
    """Delete temporary index files left by processes that died while saving."""
    path = Path(path)
    for tmp in path.parent.glob(f"{path.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            continue


class IndexCache:
    """The FAISS index of one memory database, kept in step with the ``memories`` table.

    Reads the columns ``id``, ``deleted``, ``embedding``, ``embed_model`` and ``gen`` and the
    ``generation`` in ``memory_meta`` (see ``store/migrations.py``); never writes the database.
    The caller serialises calls (``MemoryStore`` holds its lock).
    """

    def __init__(self, db: sqlite3.Connection, path: Path, *, store_id: str, embedder: "Embedder",
                 progress: Callable[[int, str], ContextManager[Callable[[int], None]]]) -> None:
        self.db = db
        self.path = path
        self.store_id = store_id
        self.embedder = embedder
        self._progress = progress
        self._index: VectorIndex | None = None
        self._gen = 0  # the write generation the in-memory index reflects
        self._max_id = 0  # ids above this are new rows: nothing to remove before adding them
        self._dirty = False

    @property
    def loaded(self) -> bool:
        return self._index is not None

    def _generation(self) -> int:
        return int(self.db.execute("SELECT value FROM memory_meta WHERE key = 'generation'").fetchone()[0])

    def get(self) -> VectorIndex:
        """The index: loaded (or rebuilt) on first use, then caught up with every process's writes."""
        if self._index is None:
            self._open()
        else:
            self.refresh()
        assert self._index is not None
        return self._index

    def live_signature(self) -> tuple[int, int]:
        """Count and id checksum of the rows that belong in the index."""
        row = self.db.execute(f"SELECT count(*), {SQL_ID_CHECKSUM} FROM memories WHERE embed_model = ? "
                              "AND deleted = 0", (self.embedder.name,)).fetchone()
        return int(row[0]), int(row[1])

    def in_step(self) -> bool:
        index = self.get()
        return (len(index), index.checksum()) == self.live_signature()

    def _open(self) -> None:
        remove_stale_temporaries(self.path)
        reason = ""
        try:
            index, header = VectorIndex.load(self.path)
            if header.get("store_id") != self.store_id:
                reason = "it belongs to another memory database"
            elif header.get("model") != self.embedder.name or index.dim != self.embedder.dim:
                reason = f"it was made with the embedding model {header.get('model')!r}"
            elif int(header.get("generation", -1)) > self._generation():
                reason = "it is newer than the database"
            else:
                self._index, self._gen = index, int(header["generation"])
                ids = index.ids()
                self._max_id = int(ids.max()) if ids.size else 0
                self.refresh()
                if not self.in_step():
                    reason = "its vectors do not match the database"
        except IndexUnreadable as exc:
            reason = str(exc)
        if reason:
            self.rebuild()

    def refresh(self) -> None:
        """Apply the rows written (by any process) since the index's generation; no-op before loading."""
        if self._index is None or self._generation() == self._gen:
            return
        self.db.execute("BEGIN")  # one snapshot: the generation and the rows agree
        try:
            gen = self._generation()
            # INDEXED BY: without it SQLite walks the whole table in id order rather than sort a few rows
            rows = self.db.execute("SELECT id, deleted, embedding, embed_model FROM memories INDEXED BY memories_by_gen "
                                   "WHERE gen > ?", (self._gen,)).fetchall()
        finally:
            self.db.execute("COMMIT")
        self._index.remove(np.array([r[0] for r in rows if r[0] <= self._max_id], dtype=np.int64))
        keep = [r for r in rows if not r[1] and r[2] is not None and r[3] == self.embedder.name]
        if keep:
            ids = np.array([r[0] for r in keep], dtype=np.int64)
            self._index.add(ids, np.frombuffer(b"".join(r[2] for r in keep), dtype=np.float32).reshape(len(keep), -1))
            self._max_id = max(self._max_id, int(ids.max()))
        self._gen = gen
        self._dirty = True

    def rebuild(self) -> int:
        """A fresh index from the embeddings stored in SQLite, saved at once; returns its size."""
        name = self.embedder.name
        self.db.execute("BEGIN")
        try:
            gen = self._generation()
            total = self.db.execute("SELECT count(*) FROM memories WHERE embed_model = ? AND deleted = 0",
                                    (name,)).fetchone()[0]
            index = VectorIndex(self.embedder.dim)
            cursor = self.db.execute("SELECT id, embedding FROM memories WHERE embed_model = ? AND deleted = 0 "
                                     "ORDER BY id", (name,))
            with self._progress(total, "rebuilding the memory index") as advance:
                while rows := cursor.fetchmany(4096):
                    ids = np.array([r[0] for r in rows], dtype=np.int64)
                    index.add(ids, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1))
                    advance(len(rows))
        finally:
            self.db.execute("COMMIT")
        ids = index.ids()
        self._index, self._gen, self._max_id = index, gen, int(ids.max()) if ids.size else 0
        self._dirty = True
        # forced: a damaged file can carry an intact header claiming to be current
        self.save(force=True)
        return len(index)

    def save(self, force: bool = False) -> None:
        """Write the index file unless it is unchanged or another process saved a newer one."""
        if self._index is None or not self._dirty:
            return
        if not force and self._newer_file_on_disk():
            self._dirty = False
            return
        self._index.save(self.path, {"store_id": self.store_id, "generation": self._gen, "model": self.embedder.name})
        self._dirty = False

    def _newer_file_on_disk(self) -> bool:
        try:
            header = VectorIndex.load_header(self.path)
        except IndexUnreadable:
            return False
        return (header.get("store_id") == self.store_id and header.get("model") == self.embedder.name
                and int(header.get("generation", -1)) >= self._gen)
