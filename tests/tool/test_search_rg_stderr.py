"""ripgrep's error output never stalls a search."""

from __future__ import annotations

import json
from pathlib import Path

from tool.search import search


def test_a_ripgrep_writing_lots_of_errors_is_not_stalled_by_them(tmp_path: Path) -> None:
    # a stand-in for ripgrep in a tree of unreadable folders: 1 MB of messages on stderr before
    # its one match; with stderr left unread it would block until the time limit killed it
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app.py").write_text("needle here\n")
    hit = {"type": "match", "data": {"path": {"text": "./app.py"}, "lines": {"text": "needle here\n"},
                                     "line_number": 1, "submatches": []}}
    fake = tmp_path / "rg"
    fake.write_text("#!/bin/sh\nhead -c 1048576 /dev/zero | tr '\\000' e >&2\n"
                    f"cat <<'END'\n{json.dumps(hit)}\nEND\n")
    fake.chmod(0o755)
    found = search(ws, "needle", rg=str(fake), time_limit_s=20)
    assert (found.backend, found.stopped_early) == ("ripgrep", False)
    assert [(m.path, m.line, m.text) for m in found.matches] == [("app.py", 1, "needle here")]
