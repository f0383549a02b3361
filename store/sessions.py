"""Sessions: every message of every run, written to SQLite as it happens.

One database per workspace (``workspace/.agent/sessions.db``), in WAL mode so a second process
(another CLI, ``/sessions``) can read while a run writes, and a killed process loses nothing that
was committed. Each :meth:`SessionStore.append` is its own transaction.

Messages are kept for good. Context compaction does not delete: it marks the messages it
summarised ``compacted`` and adds one ``summary`` message whose ``position`` places it where the
summarised part was, so the context view (:meth:`SessionStore.records`) and the full transcript
(``include_compacted=True``) both come from the same rows.

Schema changes are an append-only list of functions (:data:`MIGRATIONS`); ``PRAGMA user_version``
says how many have run. Never edit or reorder one that has shipped; add a new one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from core.errors import ConfigError
from core.messages import Message, ToolCall
from store.migrations import migrate as run_migrations

#: what a tool result synthesised for a call that never got one says
INTERRUPTED_RESULT = "Error: interrupted before a result was recorded"

DB_NAME = "sessions.db"
STATE_DIR = ".agent"


class SessionNotFound(ConfigError):
    """No session with that id in this workspace."""


#: how each status of the last run reads in ``/sessions`` (``done`` depends on what was run)
STATUS_LABELS = {"new": "new", "running": "running (or stopped mid-run)", "budget_exceeded": "stopped: budget spent",
                 "interrupted": "interrupted", "format_errors": "stopped: tool calls kept failing",
                 "checks_failed": "stopped: checks failed", "error": "stopped: server error"}


@dataclass(frozen=True)
class SessionInfo:
    """One row of the sessions table."""

    id: str
    created: float
    updated: float
    title: str
    workspace: str
    provider: str
    model: str
    status: str
    messages: int = 0
    tool_calls: int = 0  # tool results in the session: 0 means nothing was ever run

    @property
    def label(self) -> str:
        """The status in words for a person: ``answered, nothing run``, ``done, 4 tool calls``, ``checks failed``."""
        if self.status == "done":
            if not self.tool_calls:
                return "answered, nothing run"
            return f"done, {self.tool_calls} tool call{'s' if self.tool_calls != 1 else ''}"
        return STATUS_LABELS.get(self.status, self.status)


@dataclass(frozen=True)
class StoredMessage:
    """A message with where it sits in its session.

    ``seq`` is the order of writing; ``position`` the order in the conversation (equal to ``seq``
    except for summaries and repaired tool results, which are placed between existing messages).
    """

    seq: int
    position: float
    message: Message
    kind: str = "message"  # "message" | "summary"
    compacted: bool = False
    created: float = 0.0


# --- migrations (append-only) ------------------------------------------------------------------

def _statements(db: sqlite3.Connection, sql: str) -> None:
    """Run several statements inside the caller's transaction (``executescript`` would commit it)."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def _m1_initial(db: sqlite3.Connection) -> None:
    _statements(db, """
        CREATE TABLE sessions (
            id        TEXT PRIMARY KEY,
            created   REAL NOT NULL,
            updated   REAL NOT NULL,
            title     TEXT NOT NULL DEFAULT '',
            workspace TEXT NOT NULL DEFAULT '',
            provider  TEXT NOT NULL DEFAULT '',
            model     TEXT NOT NULL DEFAULT '',
            status    TEXT NOT NULL DEFAULT 'new'
        );
        CREATE INDEX sessions_by_workspace ON sessions (workspace, updated);
        CREATE TABLE messages (
            session_id   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            seq          INTEGER NOT NULL,
            position     REAL NOT NULL,
            role         TEXT NOT NULL,
            content      TEXT NOT NULL DEFAULT '',
            tool_calls   TEXT,
            tool_call_id TEXT,
            name         TEXT,
            created      REAL NOT NULL,
            kind         TEXT NOT NULL DEFAULT 'message',
            compacted    INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (session_id, seq)
        );
        CREATE INDEX messages_by_position ON messages (session_id, position);
        """
    )


def _m2_state(db: sqlite3.Connection) -> None:
    _statements(db, """
        CREATE TABLE session_state (
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            key        TEXT NOT NULL,
            value      TEXT NOT NULL,
            updated    REAL NOT NULL,
            PRIMARY KEY (session_id, key)
        );
        """
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_m1_initial, _m2_state)


def migrate(db: sqlite3.Connection, migrations: Iterable[Callable[[sqlite3.Connection], None]] = MIGRATIONS) -> int:
    """Run the migrations the session database has not seen yet; return its schema version.

    The steps run through :func:`store.migrations.migrate`, which looks at ``user_version`` again
    once it holds the write lock, so two agents starting together on a fresh workspace do not
    both create the tables.
    """
    steps = list(migrations)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(steps):  # checked here too, so the message names this database
        raise ConfigError(
            f"the session database is from a newer version of this program (schema {version}, "
            f"this one knows {len(steps)})", hint="upgrade the program, or use another --workspace")
    return run_migrations(db, steps)


# --- rows <-> messages -------------------------------------------------------------------------

def _calls_to_json(calls: tuple[ToolCall, ...]) -> str | None:
    if not calls:
        return None
    return json.dumps([{"id": c.id, "name": c.name, "arguments": dict(c.arguments), "error": c.error}
                       for c in calls], ensure_ascii=False)


def _calls_from_json(text: str | None) -> tuple[ToolCall, ...]:
    if not text:
        return ()
    return tuple(ToolCall(c["name"], c.get("arguments") or {}, c["id"], c.get("error")) for c in json.loads(text))


def _wal(db: sqlite3.Connection, wait_s: float = 10.0) -> None:
    """Switch to WAL; another process opening the same new file at once may hold the lock briefly.

    SQLite answers "database is locked" to the switch without waiting on its busy handler, so
    the wait is here.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _row_to_stored(row: sqlite3.Row) -> StoredMessage:
    msg = Message(row["role"], row["content"], _calls_from_json(row["tool_calls"]), row["tool_call_id"], row["name"])
    return StoredMessage(row["seq"], row["position"], msg, row["kind"], bool(row["compacted"]), row["created"])


def default_path(workspace: str | os.PathLike[str]) -> Path:
    """Where a workspace keeps its sessions."""
    return Path(workspace) / STATE_DIR / DB_NAME


class SessionStore:
    """Sessions and their messages in one SQLite file. Safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we say where transactions start; each append commits at once
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            db.row_factory = sqlite3.Row
            _wal(db)
            # NORMAL under WAL: a crashed process loses nothing committed; only a power cut may
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            self.schema_version = migrate(db)
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                db.close()
            raise ConfigError(f"cannot open the session database {self.path}: {exc}",
                              hint="if the file is damaged, move it away (the sessions in it are lost to this "
                                   "program); a new one is made on the next start") from None
        except BaseException:
            if db is not None:
                db.close()
            raise
        self._db = db

    @classmethod
    def for_workspace(cls, workspace: str | os.PathLike[str]) -> "SessionStore":
        return cls(default_path(workspace))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a Ctrl-C anywhere in it leaves nothing half-written."""
        with self._lock:
            if self._db.in_transaction:  # left open by an interrupt between BEGIN and its guard
                self._db.execute("ROLLBACK")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sessions ------------------------------------------------------------------------------

    def create(self, *, title: str = "", workspace: str | os.PathLike[str] = "", provider: str = "",
               model: str = "") -> str:
        """A new empty session; returns its id."""
        sid = uuid.uuid4().hex[:12]
        now = time.time()
        title = " ".join(title.split())[:200]
        with self._transaction():
            self._db.execute(
                "INSERT INTO sessions (id, created, updated, title, workspace, provider, model, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'new')",
                (sid, now, now, title, os.fspath(workspace), provider, model))
        return sid

    def info(self, session_id: str) -> SessionInfo:
        with self._lock:
            row = self._db.execute(
                "SELECT s.*, (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id) AS n, (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id AND m.role = 'tool') AS t "
                "FROM sessions s WHERE s.id = ?", (session_id,)).fetchone()
        if row is None:
            raise SessionNotFound(f"no session {session_id!r} in {self.path}",
                                  hint="list the sessions with /sessions, or start a new one")
        return _row_to_info(row)

    def update(self, session_id: str, *, status: str | None = None, title: str | None = None,
               provider: str | None = None, model: str | None = None) -> None:
        """Change a session's status, title, provider or model."""
        fields = {k: v for k, v in (("status", status), ("title", title), ("provider", provider),
                                    ("model", model)) if v is not None}
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._transaction():
            cur = self._db.execute(f"UPDATE sessions SET {sets}{', ' if sets else ''}updated = ? WHERE id = ?",
                                   (*fields.values(), time.time(), session_id))
        if cur.rowcount == 0:
            self.info(session_id)  # raises SessionNotFound

    def list(self, *, workspace: str | os.PathLike[str] | None = None, limit: int = 50) -> list[SessionInfo]:
        """Sessions, most recently updated first."""
        sql = ("SELECT s.*, (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id) AS n, (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id AND m.role = 'tool') AS t FROM sessions s")
        args: list[Any] = []
        if workspace is not None:
            sql += " WHERE s.workspace = ?"
            args.append(os.fspath(workspace))
        sql += " ORDER BY s.updated DESC, s.rowid DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [_row_to_info(r) for r in self._db.execute(sql, args)]

    def latest(self, workspace: str | os.PathLike[str] | None = None) -> str | None:
        """The id of the most recently updated session (of ``workspace`` when given), or ``None``."""
        found = self.list(workspace=workspace, limit=1)
        return found[0].id if found else None

    def delete(self, session_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    # --- messages ------------------------------------------------------------------------------

    def append(self, session_id: str, message: Message, *, kind: str = "message",
               position: float | None = None) -> StoredMessage:
        """Write one message now (its own transaction); returns it with its place in the session."""
        now = time.time()
        with self._transaction() as db:
            cur = db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))
            if cur.rowcount == 0:
                raise SessionNotFound(f"no session {session_id!r} in {self.path}",
                                      hint="create it first with SessionStore.create()")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?",
                             (session_id,)).fetchone()[0]
            pos = float(seq) if position is None else position
            self._insert(session_id, seq, pos, message, kind, now)
        return StoredMessage(seq, pos, message, kind, False, now)

    def _insert(self, session_id: str, seq: int, pos: float, message: Message, kind: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO messages (session_id, seq, position, role, content, tool_calls, tool_call_id, name, "
            "created, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, seq, pos, message.role, message.content, _calls_to_json(message.tool_calls),
             message.tool_call_id, message.name, now, kind))

    def records(self, session_id: str, *, include_compacted: bool = False) -> list[StoredMessage]:
        """The session's messages in conversation order (without compacted ones unless asked)."""
        sql = "SELECT * FROM messages WHERE session_id = ?"
        if not include_compacted:
            sql += " AND compacted = 0"
        sql += " ORDER BY position, seq"
        with self._lock:
            rows = self._db.execute(sql, (session_id,)).fetchall()
        return [_row_to_stored(r) for r in rows]

    def messages(self, session_id: str, *, include_compacted: bool = False) -> list[Message]:
        """The session's messages in conversation order."""
        return [r.message for r in self.records(session_id, include_compacted=include_compacted)]

    def load(self, session_id: str) -> list[StoredMessage]:
        """The session's context view, after :meth:`repair` (raises :class:`SessionNotFound`)."""
        self.info(session_id)
        self.repair(session_id)
        return self.records(session_id)

    def repair(self, session_id: str) -> int:
        """Give every tool call that has no result an error result; returns how many were added.

        A process killed between recording an assistant message and its tool results leaves calls
        without results, which a strict server rejects. The synthesised result is placed right
        after the call's round, so the call and its result stay together.
        """
        added = 0
        with self._lock:
            rows = self._db.execute("SELECT * FROM messages WHERE session_id = ? ORDER BY position, seq",
                                    (session_id,)).fetchall()
            answered = {r["tool_call_id"] for r in rows if r["role"] == "tool"}
            for i, row in enumerate(rows):
                missing = [c for c in _calls_from_json(row["tool_calls"]) if c.id not in answered]
                if not missing:
                    continue
                # the round ends at the last tool message that follows it directly
                end = i
                while end + 1 < len(rows) and rows[end + 1]["role"] == "tool":
                    end += 1
                low = rows[end]["position"]
                high = rows[end + 1]["position"] if end + 1 < len(rows) else low + 1.0
                step = (high - low) / (len(missing) + 1)
                for k, call in enumerate(missing, start=1):
                    msg = Message.tool(call.id, call.name, INTERRUPTED_RESULT)
                    self.append(session_id, msg, position=low + step * k)
                    if row["compacted"]:
                        with self._transaction() as db:
                            db.execute("UPDATE messages SET compacted = 1 WHERE session_id = ? AND tool_call_id = ?",
                                       (session_id, call.id))
                    answered.add(call.id)
                    added += 1
        return added

    def compact(self, session_id: str, seqs: Iterable[int], summary: Message) -> StoredMessage:
        """Mark ``seqs`` as compacted and add ``summary`` where they were, in one transaction."""
        seqs = sorted(set(seqs))
        if not seqs:
            raise ValueError("compact() needs at least one message to summarise")
        now = time.time()
        marks = ",".join("?" * len(seqs))
        with self._transaction() as db:
            last = db.execute(f"SELECT MAX(position) FROM messages WHERE session_id = ? AND seq IN ({marks})",
                              (session_id, *seqs)).fetchone()[0]
            if last is None:
                raise ValueError(f"session {session_id!r} has none of the messages {seqs[:5]}…")
            nxt = db.execute("SELECT MIN(position) FROM messages WHERE session_id = ? AND position > ?",
                             (session_id, last)).fetchone()[0]
            # just after the last summarised message, before whatever followed it
            pos = (last + nxt) / 2 if nxt is not None else last + 0.5
            db.execute(f"UPDATE messages SET compacted = 1 WHERE session_id = ? AND seq IN ({marks})",
                       (session_id, *seqs))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?",
                             (session_id,)).fetchone()[0]
            self._insert(session_id, seq, pos, summary, "summary", now)
            db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))
        return StoredMessage(seq, pos, summary, "summary", False, now)

    # --- per-session key/value state (the plan lives here) -----------------------------------

    def get_state(self, session_id: str, key: str, default: Any = None) -> Any:
        """The decoded JSON value stored under ``key``, or ``default``."""
        with self._lock:
            row = self._db.execute("SELECT value FROM session_state WHERE session_id = ? AND key = ?",
                                   (session_id, key)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_state(self, session_id: str, key: str, value_json: Any) -> None:
        """Store ``value_json`` (anything ``json.dumps`` accepts) under ``key``."""
        text = json.dumps(value_json, ensure_ascii=False)
        self.info(session_id)
        with self._transaction():
            self._db.execute(
                "INSERT INTO session_state (session_id, key, value, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                (session_id, key, text, time.time()))


def _row_to_info(row: sqlite3.Row) -> SessionInfo:
    return SessionInfo(row["id"], row["created"], row["updated"], row["title"], row["workspace"],
                       row["provider"], row["model"], row["status"], row["n"], row["t"])
