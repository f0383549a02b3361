"""Schema migrations and the FAISS file as a cache: rebuilt when missing, damaged or out of step."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError
from store.memory import MemoryInput, MemoryStore
from store.migrations import MIGRATIONS
from store.vectors import VectorIndex

# schema version 1, as the first release wrote it (kept here by hand: the test must not borrow
# the code it checks)
SCHEMA_V1 = """
CREATE TABLE memories (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    text      TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('fact', 'lesson', 'preference', 'snippet')),
    tags      TEXT NOT NULL DEFAULT ',',
    hash      TEXT NOT NULL,
    created   REAL NOT NULL,
    updated   REAL NOT NULL,
    last_used REAL,
    deleted   INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX memories_live_hash ON memories (hash) WHERE deleted = 0;
CREATE INDEX memories_by_updated ON memories (updated) WHERE deleted = 0;
CREATE TABLE memory_history (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id INTEGER NOT NULL,
    action    TEXT NOT NULL,
    text      TEXT,
    kind      TEXT,
    tags      TEXT,
    at        REAL NOT NULL,
    detail    TEXT NOT NULL DEFAULT ''
);
INSERT INTO memories (text, kind, tags, hash, created, updated) VALUES
    ('The nightly backup runs at 02:00 and keeps seven days.', 'fact', ',ops,', 'h1', 1000.0, 1000.0),
    ('Never run migrations against production on a Friday.', 'lesson', ',', 'h2', 1001.0, 1001.0),
    ('An old forgotten note about ZEBRA_CODE_77.', 'fact', ',', 'h3', 1002.0, 1003.0);
UPDATE memories SET deleted = 1 WHERE id = 3;
PRAGMA user_version = 1;
"""


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")}


def test_an_empty_database_is_migrated_to_the_latest_schema_in_wal_mode(memory_path: Path, minilm) -> None:
    with MemoryStore(memory_path, minilm, progress=False) as store:
        assert store.schema_version == len(MIGRATIONS) == 3
    with sqlite3.connect(memory_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"memories", "memories_fts", "memory_history", "memory_meta", "memories_fts_insert",
            "memories_fts_update", "memories_fts_delete"} <= _tables(memory_path)


def test_opening_the_store_does_not_import_torch(memory_path: Path, tmp_path: Path) -> None:
    import subprocess

    code = ("import sys; from store.embed import SentenceTransformerEmbedder; from store.memory import MemoryStore; "
            f"s = MemoryStore({str(memory_path)!r}, SentenceTransformerEmbedder()); s.list(); s.close(); "
            "print('torch' in sys.modules, 'faiss' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["False", "False"], out.stderr


@pytest.mark.slow
def test_a_database_with_the_older_schema_is_migrated_and_its_memories_become_searchable(
        memory_path: Path, minilm) -> None:
    memory_path.parent.mkdir(parents=True)
    with sqlite3.connect(memory_path) as db:
        db.executescript(SCHEMA_V1)
    with MemoryStore(memory_path, minilm, progress=False) as store:
        assert store.schema_version == 3
        assert [m.id for m in store.list()] == [2, 1]
        assert store.get(1).tags == ("ops",)
        # FTS5 was filled from the old rows (live ones only), vectors were computed on first use
        assert [h.memory.id for h in store.search("ZEBRA_CODE_77", k=2) if h.keyword] == []
        hits = store.search("when are backups taken", k=1)
        assert hits[0].memory.id == 1 and hits[0].similarity > 0.4
        assert store.check() == {"integrity": ["ok"], "memories": 2, "vectors": 2, "index_in_step": True}
        # ids go on from where the old database left off, past the forgotten row
        assert store.add("A new memory after the migration.", "fact").memory.id == 4


def test_a_database_from_a_newer_program_is_refused(memory_path: Path, minilm) -> None:
    memory_path.parent.mkdir(parents=True)
    with sqlite3.connect(memory_path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="newer version of this program"):
        MemoryStore(memory_path, minilm)


def _filled(memory_path: Path, minilm) -> list[int]:
    with MemoryStore(memory_path, minilm, progress=False) as store:
        results = store.add_many([MemoryInput(f"Service number {i} listens on port {8000 + i}.", "fact")
                                  for i in range(20)] + [MemoryInput("The cache is Redis 7 with LRU eviction.", "fact")])
        return [r.memory.id for r in results]


@pytest.mark.slow
def test_a_deleted_index_file_is_rebuilt_from_sqlite(memory_path: Path, minilm) -> None:
    ids = _filled(memory_path, minilm)
    index_path = memory_path.with_suffix(".faiss")
    index_path.unlink()
    with MemoryStore(memory_path, minilm, progress=False) as store:
        assert store.search("which key-value cache do we use", k=1)[0].memory.id == ids[-1]
        assert store.check()["index_in_step"] is True
    assert VectorIndex.load_header(index_path)["count"] == 21


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_index_file_is_rebuilt_from_sqlite(memory_path: Path, minilm, damage: str) -> None:
    ids = _filled(memory_path, minilm)
    index_path = memory_path.with_suffix(".faiss")
    data = index_path.read_bytes()
    index_path.write_bytes({"garbage": b"\x00not an index" * 100, "truncated": data[: len(data) // 2],
                            "empty": b""}[damage])
    with MemoryStore(memory_path, minilm, progress=False) as store:
        assert store.search("which key-value cache do we use", k=1)[0].memory.id == ids[-1]
        assert store.check()["vectors"] == 21
    VectorIndex.load(index_path)  # the rebuilt file reads back


@pytest.mark.slow
def test_an_index_out_of_step_with_sqlite_is_noticed_by_its_checksum_and_rebuilt(memory_path: Path, minilm) -> None:
    ids = _filled(memory_path, minilm)
    # a writer that does not know about generations (a person with the sqlite3 shell) deletes a row
    with sqlite3.connect(memory_path) as db:
        db.execute("DELETE FROM memories WHERE id = ?", (ids[-1],))
    with MemoryStore(memory_path, minilm, progress=False) as store:
        assert ids[-1] not in [h.memory.id for h in store.search("which key-value cache do we use", k=3)]
        assert store.check() == {"integrity": ["ok"], "memories": 20, "vectors": 20, "index_in_step": True}


@pytest.mark.slow
def test_an_index_file_of_another_database_is_not_used(memory_path: Path, tmp_path: Path, minilm) -> None:
    _filled(memory_path, minilm)
    other = tmp_path / "other" / "memory.db"
    with MemoryStore(other, minilm, progress=False) as store:
        store.add("Only this memory is in the other database.", "fact")
    other.with_suffix(".faiss").write_bytes(memory_path.with_suffix(".faiss").read_bytes())
    with MemoryStore(other, minilm, progress=False) as store:
        assert store.check()["vectors"] == 1
        assert [h.memory.text for h in store.search("port", k=5)] == ["Only this memory is in the other database."]


@pytest.mark.slow
def test_reindex_rebuilds_fts_and_vectors(memory_path: Path, minilm) -> None:
    ids = _filled(memory_path, minilm)
    with sqlite3.connect(memory_path) as db:  # damage the word index behind the triggers' back
        db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('delete-all')")
    with MemoryStore(memory_path, minilm, progress=False) as store:
        assert not any(h.keyword for h in store.search("Redis", k=3))
        report = store.reindex(reembed=True)
        assert (report.vectors, report.embedded) == (21, 21)
        hit = store.search("Redis", k=1)[0]
        assert (hit.memory.id, hit.keyword) == (ids[-1], True)
