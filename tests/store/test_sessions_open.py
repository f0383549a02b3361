"""Opening the session database: damaged files and agents starting together."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from core.errors import ConfigError
from store.sessions import MIGRATIONS, SessionStore


def test_a_damaged_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    db.write_bytes(b"garbage " * 1000)
    with pytest.raises(ConfigError, match=f"cannot open the session database {db}: file is not a database") as info:
        SessionStore(db)
    assert "move it away" in (info.value.hint or "")


def test_a_newer_schema_is_refused_with_the_session_database_named(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    with sqlite3.connect(db) as raw:
        raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(ConfigError, match="the session database is from a newer version"):
        SessionStore(db)


def _open(path: str, barrier: "multiprocessing.synchronize.Barrier", results: "multiprocessing.Queue[str]") -> None:
    barrier.wait()
    try:
        store = SessionStore(path)
        results.put(f"ok {store.schema_version}")
        store.close()
    except BaseException as exc:  # reported to the parent, which asserts on it
        results.put(f"{type(exc).__name__}: {exc}")


def test_agents_starting_together_on_a_fresh_workspace_both_open_it(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(4):  # each attempt is a fresh race; any crash fails the test
        path = str(tmp_path / f"sessions{attempt}.db")
        barrier = ctx.Barrier(4)
        results = ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, results)) for _ in range(4)]
        for proc in procs:
            proc.start()
        got = sorted(results.get(timeout=60) for _ in procs)
        for proc in procs:
            proc.join(timeout=60)
        assert got == [f"ok {len(MIGRATIONS)}"] * 4
