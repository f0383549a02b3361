"""The session store: a real SQLite file in a temporary folder."""

from __future__ import annotations

import sqlite3

import pytest

from core.errors import ConfigError
from core.messages import Message, ToolCall
from store.sessions import INTERRUPTED_RESULT, MIGRATIONS, SessionNotFound, SessionStore, default_path, migrate


@pytest.fixture
def store(tmp_path):
    with SessionStore(tmp_path / "ws" / ".agent" / "sessions.db") as s:
        yield s


def test_a_new_database_is_in_wal_mode_at_the_latest_schema(store):
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == store.schema_version


def test_the_default_place_is_inside_the_workspace(tmp_path):
    assert default_path(tmp_path) == tmp_path / ".agent" / "sessions.db"
    with SessionStore.for_workspace(tmp_path) as s:
        assert s.path == tmp_path / ".agent" / "sessions.db"


def test_an_older_database_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path, isolation_level=None)
    migrate(raw, MIGRATIONS[:1])
    raw.execute("INSERT INTO sessions (id, created, updated, title) VALUES ('old1', 1, 1, 'from v1')")
    raw.close()
    with SessionStore(path) as s:
        assert s.schema_version == len(MIGRATIONS)
        assert s.info("old1").title == "from v1"
        s.set_state("old1", "plan", {"items": []})
        assert s.get_state("old1", "plan") == {"items": []}


def test_a_database_from_a_newer_program_is_refused_clearly(tmp_path):
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(ConfigError, match="the session database is from a newer version of this program"):
        SessionStore(path)


def test_messages_round_trip_with_tool_calls(store):
    sid = store.create(title="fix  the\nbug", workspace="/w", provider="openai", model="qwen")
    call = ToolCall("read_file", {"path": "a.py", "lines": [1, 2]}, "call_1")
    bad = ToolCall("edit_file", {}, "call_2", error="arguments are not valid JSON")
    sent = [Message.user("fix the bug"), Message.assistant("Looking.", [call, bad]),
            Message.tool("call_1", "read_file", "print(1)"), Message.tool("call_2", "edit_file", "Error: …"),
            Message.assistant("Fixed.")]
    stored = [store.append(sid, m) for m in sent]
    assert [s.seq for s in stored] == [1, 2, 3, 4, 5]
    assert store.messages(sid) == sent
    info = store.info(sid)
    assert (info.title, info.workspace, info.provider, info.model, info.status, info.messages) == (
        "fix the bug", "/w", "openai", "qwen", "new", 5)


def test_appending_to_an_unknown_session_fails_and_writes_nothing(store):
    with pytest.raises(SessionNotFound, match="no session 'ghost'"):
        store.append("ghost", Message.user("hi"))
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_latest_and_list_are_most_recent_first_and_filter_by_workspace(store):
    a = store.create(title="a", workspace="/one")
    b = store.create(title="b", workspace="/two")
    c = store.create(title="c", workspace="/one")
    store.append(a, Message.user("touch a last"))
    assert store.latest() == a
    assert store.latest("/two") == b
    assert [s.id for s in store.list(workspace="/one")] == [a, c]
    assert [s.id for s in store.list(limit=2)] == [a, c]
    assert store.latest("/nowhere") is None


def test_load_repairs_a_dangling_call_right_after_its_round(store):
    sid = store.create()
    one, two = ToolCall("a", {}, "c1"), ToolCall("b", {}, "c2")
    store.append(sid, Message.user("task"))
    store.append(sid, Message.assistant("", [one, two]))
    store.append(sid, Message.tool("c1", "a", "ok"))
    loaded = store.load(sid)
    assert [m.message for m in loaded] == [Message.user("task"), Message.assistant("", [one, two]),
                                           Message.tool("c1", "a", "ok"), Message.tool("c2", "b", INTERRUPTED_RESULT)]
    assert store.repair(sid) == 0  # idempotent
    assert len(store.messages(sid)) == 4


def test_a_dangling_call_in_the_middle_gets_its_result_before_what_follows(store):
    sid = store.create()
    call = ToolCall("a", {}, "c1")
    store.append(sid, Message.assistant("", [call]))
    store.append(sid, Message.user("later message"))
    assert store.repair(sid) == 1
    assert [m.role for m in store.messages(sid)] == ["assistant", "tool", "user"]


def test_loading_an_unknown_session_says_how_to_find_one(store):
    with pytest.raises(SessionNotFound) as info:
        store.load("nope")
    assert info.value.hint == "list the sessions with /sessions, or start a new one"


def test_compaction_hides_the_summarised_messages_and_places_the_summary_where_they_were(store):
    sid = store.create()
    for text in ["task", "step 1", "step 2", "step 3"]:
        store.append(sid, Message.user(text))
    summary = store.compact(sid, [2, 3], Message.user("[summary] steps 1 and 2"))
    assert summary.kind == "summary" and summary.seq == 5
    assert [m.content for m in store.messages(sid)] == ["task", "[summary] steps 1 and 2", "step 3"]
    assert [(r.message.content, r.compacted) for r in store.records(sid, include_compacted=True)] == [
        ("task", False), ("step 1", True), ("step 2", True), ("[summary] steps 1 and 2", False), ("step 3", False)]
    store.append(sid, Message.user("step 4"))
    assert store.messages(sid)[-1].content == "step 4"


def test_state_is_json_per_session_and_key(store):
    sid = store.create()
    assert store.get_state(sid, "plan") is None
    assert store.get_state(sid, "plan", default=[]) == []
    store.set_state(sid, "plan", [{"item": "write tests", "status": "pending"}])
    store.set_state(sid, "plan", [{"item": "write tests", "status": "done"}])
    assert store.get_state(sid, "plan") == [{"item": "write tests", "status": "done"}]
    with pytest.raises(SessionNotFound):
        store.set_state("nope", "plan", [])


def test_two_stores_on_one_file_see_each_others_writes(store):
    sid = store.create(title="shared")
    with SessionStore(store.path) as other:
        other.append(sid, Message.user("from the other process"))
        assert store.messages(sid) == [Message.user("from the other process")]
        store.update(sid, status="done")
        assert other.info(sid).status == "done"


def test_deleting_a_session_removes_its_messages_and_state(store):
    sid = store.create()
    store.append(sid, Message.user("x"))
    store.set_state(sid, "k", 1)
    store.delete(sid)
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        assert raw.execute("SELECT COUNT(*) FROM session_state").fetchone()[0] == 0


def test_a_transaction_left_open_by_an_interrupt_is_rolled_back_before_the_next_write(store):
    sid = store.create()
    store._db.execute("BEGIN IMMEDIATE")  # what a Ctrl-C between BEGIN and its guard leaves behind
    store._db.execute("INSERT INTO messages (session_id, seq, position, role, created) VALUES (?, 99, 99, 'user', 0)",
                      (sid,))
    store.append(sid, Message.user("after the interrupt"))
    assert store.messages(sid) == [Message.user("after the interrupt")]
    with SessionStore(store.path) as other:
        assert other.messages(sid) == [Message.user("after the interrupt")]
