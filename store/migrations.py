"""The memory database's schema, as an append-only list of migrations.

``PRAGMA user_version`` says how many have run. Never edit or reorder one that has shipped; add a
new one. Each runs in its own ``BEGIN IMMEDIATE`` transaction, so a crash mid-migration leaves the
database at the previous version.

1. memories (ids from AUTOINCREMENT: never reused, even after the newest row is deleted) and the
   history of every change.
2. the FTS5 index on the text: an external-content table, kept in step by triggers, holding only
   live (not forgotten) memories.
3. vectors: each memory's embedding as a float32 blob (the FAISS file is rebuilt from these without
   re-embedding), the model that made it (NULL exactly when there is no vector, so the index on
   it answers "which rows need embedding" and "what belongs in the FAISS index" without reading
   the blobs), and the write generation (``gen``) that lets a process bring its FAISS index up to
   date with another process's writes.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Callable, Iterable

from core.errors import ConfigError


def _statements(db: sqlite3.Connection, sql: str) -> None:
    """Run several statements inside the caller's transaction (``executescript`` would commit it).

    Statements end with ``;`` at the end of a line, so trigger bodies (``…; END;``) stay whole.
    """
    buffer: list[str] = []
    for line in sql.splitlines():
        buffer.append(line)
        text = "\n".join(buffer).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            db.execute(text)
            buffer = []
    if "\n".join(buffer).strip():
        db.execute("\n".join(buffer))


def _m1_memories(db: sqlite3.Connection) -> None:
    _statements(db, """
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
        CREATE INDEX memory_history_by_memory ON memory_history (memory_id, seq);
    """)


def _m2_fts(db: sqlite3.Connection) -> None:
    _statements(db, """
        CREATE VIRTUAL TABLE memories_fts USING fts5(
            text, content='memories', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories WHEN new.deleted = 0 BEGIN
            INSERT INTO memories_fts (rowid, text) VALUES (new.id, new.text);
        END;
        CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories WHEN old.deleted = 0 BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END;
        CREATE TRIGGER memories_fts_update AFTER UPDATE OF text, deleted ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, text) SELECT 'delete', old.id, old.text WHERE old.deleted = 0;
            INSERT INTO memories_fts (rowid, text) SELECT new.id, new.text WHERE new.deleted = 0;
        END;
        INSERT INTO memories_fts (rowid, text) SELECT id, text FROM memories WHERE deleted = 0;
    """)


def _m3_vectors(db: sqlite3.Connection) -> None:
    _statements(db, """
        ALTER TABLE memories ADD COLUMN embedding BLOB;
        ALTER TABLE memories ADD COLUMN embed_model TEXT;
        ALTER TABLE memories ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX memories_by_gen ON memories (gen);
        CREATE INDEX memories_by_model ON memories (embed_model, deleted);
        CREATE TABLE memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """)
    # store_id ties a FAISS file to this database; generation counts committed writes
    db.execute("INSERT INTO memory_meta (key, value) VALUES ('store_id', ?), ('generation', '1')",
               (uuid.uuid4().hex,))
    db.execute("UPDATE memories SET gen = 1")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_m1_memories, _m2_fts, _m3_vectors)


def migrate(db: sqlite3.Connection, migrations: Iterable[Callable[[sqlite3.Connection], None]] = MIGRATIONS) -> int:
    """Run the migrations the database has not seen yet; return its schema version."""
    steps = list(migrations)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(steps):
        raise ConfigError(
            f"the memory database is from a newer version of this program (schema {version}, "
            f"this one knows {len(steps)})", hint="upgrade the program, or use another workspace")
    for number, step in enumerate(steps[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated while we waited for the write lock
            if db.execute("PRAGMA user_version").fetchone()[0] >= number:
                db.execute("COMMIT")
                continue
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return len(steps)
