"""The FAISS index of memory vectors: exact inner product, ids = SQLite row ids, a file on disk.

The index is a cache of what SQLite holds. Its file starts with a small JSON header saying which
database (``store_id``), which write generation, which model and how many vectors it reflects,
then the FAISS index itself; the whole file is written to a temporary name and renamed into
place, so a reader sees either the old file or the new one, never half of one.

Why a flat index and not HNSW: at 100,000 vectors an exact scan is ~12 ms on one core, a rebuild
from SQLite takes a fraction of a second, and removal is supported; HNSW searches in under 1 ms but
takes tens of seconds to build and cannot remove vectors (see ``bench/memory_bench.py``).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"LCMEMVEC"
FORMAT = 1
#: searches of one query run on one thread: on shared cores FAISS's OpenMP pool makes them ~5x slower
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

    return faiss


class VectorIndex:
    """Unit vectors keyed by int64 ids, searched by inner product (cosine similarity)."""

    def __init__(self, dim: int, index: Any = None) -> None:
        faiss = _faiss()
        self.dim = int(dim)
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

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
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(SEARCH_THREADS)
        try:
            scores, ids = self._index.search(q, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep]

    def search_many(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, similarities)``, each of shape ``(len(queries), k)``; missing neighbours have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(int(k), len(self))
        if k <= 0 or len(queries) == 0:
            return np.full((len(queries), 0), -1, dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
        scores, ids = self._index.search(queries, k)
        return ids.astype(np.int64), scores

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
