"""A damaged session database stops ``cli.py`` with one clear line, not a stack trace."""

from __future__ import annotations


def test_a_corrupt_sessions_db_is_one_line_and_exit_2(cli, scripted, workspace):
    db = workspace / ".agent" / "sessions.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"this is not a database, just garbage " * 200)
    server = scripted([{"text": "never asked"}])
    done = cli("-p", "hi", server=server)
    assert done.rc == 2, done.err
    assert "Traceback" not in done.err
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert len(lines) == 1, done.err
    assert f"cannot open the session database {db}" in lines[0]
    assert "file is not a database" in lines[0] and "move it away" in lines[0]
    assert done.out == ""
