"""The workspace shown to the model before its first step: the file list and the files the task names."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ToolError
from flow.workspace_view import WorkspaceView
from tool.files import FileTools


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "stats.py").write_text("def average(xs):\n    return sum(xs) / (len(xs) - 1)\n")
    (root / "README.md").write_text("# proj\n")
    (root / "data.csv").write_text("a,b\n1,2\n")
    (root / ".env").write_text("SECRET=1\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    return root


def test_the_view_lists_the_files_and_shows_the_ones_the_task_names(ws):
    files = FileTools(ws, rg=None)
    view = WorkspaceView(files)
    text = view("Fix average in stats.py", "s1")
    assert "Files in the workspace:\n.env\nREADME.md\ndata.csv\nsrc/stats.py" in text
    assert "--- src/stats.py ---\ndef average(xs):\n    return sum(xs) / (len(xs) - 1)\n--- end of src/stats.py ---" in text
    assert ".git" not in text and "SECRET" not in text
    # shown counts as read: the edit needs no read_file step
    files.edit_file("src/stats.py", "(len(xs) - 1)", "len(xs)")
    assert (ws / "src" / "stats.py").read_text().endswith("return sum(xs) / len(xs)\n")


def test_the_view_is_made_once_per_task_so_the_prompt_prefix_stays_the_same(ws):
    files = FileTools(ws, rg=None)
    view = WorkspaceView(files)
    first = view("Fix average in stats.py", "s1")
    (ws / "src" / "stats.py").write_text("changed\n")
    assert view("Fix average in stats.py", "s1") == first
    assert "changed" in view("Look at src/stats.py again", "s1")  # a new task sees the files as they are now


def test_protected_files_named_by_the_task_are_not_shown_and_a_file_not_shown_still_needs_a_read(ws):
    files = FileTools(ws, rg=None)
    text = WorkspaceView(files)("print .env and README.md", "s1")
    assert "SECRET" not in text and "--- README.md ---" in text
    with pytest.raises(ToolError, match="has not been read"):
        files.edit_file("data.csv", "1,2", "3,4")


def test_a_small_workspace_is_shown_whole_when_the_task_names_no_file(tmp_path):
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "app.py").write_text("print('hi')\n")
    text = WorkspaceView(FileTools(root, rg=None))("Why does it print hi?", "s1")
    assert "--- app.py ---\nprint('hi')\n" in text


def test_an_empty_workspace_says_so_and_a_zero_budget_shows_nothing(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    assert WorkspaceView(FileTools(root, rg=None))("write hello.py", "s1") == "Files in the workspace: none (it is empty)."
    assert WorkspaceView(FileTools(root, rg=None), budget_tokens=0)("write hello.py", "s1") is None


def test_a_file_too_long_for_the_budget_is_listed_but_not_shown(ws):
    (ws / "big.py").write_text("x = 1\n" * 5000)
    text = WorkspaceView(FileTools(ws, rg=None), budget_tokens=500)("refactor big.py", "s1")
    assert "big.py" in text and "--- big.py ---" not in text
