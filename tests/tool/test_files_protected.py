"""The file tools never read or write the secrets file (.env) or the agent's state (.agent/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.paths import PROTECTED, ProtectedPath, is_protected
from tool.files import FileTools

SECRET = "GEMINI_API_KEY=sk-very-secret\nAGENT_SANDBOX=on\n"
RG = shutil.which("rg")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / ".env").write_text(SECRET)
    (root / "sub" / ".env").write_text(SECRET)
    (root / ".agent").mkdir()
    (root / ".agent" / "notes.txt").write_text("GEMINI_API_KEY in state\n")
    (root / "app.py").write_text("import os\nKEY = os.environ['GEMINI_API_KEY']\n")
    return root


def test_the_protected_names_are_shared_from_core_paths(ws: Path) -> None:
    assert PROTECTED == (".env", ".agent")
    assert is_protected(ws / ".env", ws) and is_protected(ws / "sub" / ".env", ws)
    assert is_protected(ws / ".agent" / "sessions.db", ws)
    assert not is_protected(ws / ".envrc", ws) and not is_protected(ws / "app.py", ws) and not is_protected(ws, ws)


@pytest.mark.parametrize("path", [".env", "sub/.env", "./.env", ".agent/notes.txt"])
def test_read_file_refuses_a_protected_name(ws: Path, path: str) -> None:
    with pytest.raises(ProtectedPath, match="the file tools do not read or write it"):
        FileTools(ws).read_file(path)


def test_read_file_refuses_a_link_to_the_secrets_file(ws: Path) -> None:
    (ws / "innocent.txt").symlink_to(ws / ".env")
    with pytest.raises(ProtectedPath, match="is .env, the secrets and settings file"):
        FileTools(ws).read_file("innocent.txt")


@pytest.mark.parametrize("path", [".env", "sub/.env", ".agent/notes.txt"])
def test_write_and_edit_refuse_a_protected_name(ws: Path, path: str) -> None:
    tools = FileTools(ws)
    with pytest.raises(ProtectedPath):
        tools.write_file(path, "AGENT_SANDBOX=off\n")
    with pytest.raises(ProtectedPath):
        tools.edit_file(path, "AGENT_SANDBOX=on", "AGENT_SANDBOX=off")
    assert (ws / ".env").read_text() == SECRET and (ws / "sub" / ".env").read_text() == SECRET


def test_write_file_refuses_a_new_secrets_file(tmp_path: Path) -> None:
    with pytest.raises(ProtectedPath, match="'.env' is .env"):
        FileTools(tmp_path).write_file(".env", "AGENT_SANDBOX=off\n")
    assert not (tmp_path / ".env").exists()


@pytest.mark.parametrize("rg", [None, RG] if RG else [None], ids=["python", "ripgrep"][: 2 if RG else 1])
def test_search_files_does_not_look_inside_protected_files(ws: Path, rg: str | None) -> None:
    result = FileTools(ws, rg=rg).search_files("GEMINI_API_KEY")
    assert result.content == "app.py:2: KEY = os.environ['GEMINI_API_KEY']"
    with pytest.raises(ProtectedPath):
        FileTools(ws, rg=rg).search_files("KEY", path=".env")


def test_list_files_shows_the_name_but_not_the_content(ws: Path) -> None:
    listing = FileTools(ws).list_files(".").content
    assert ".env" in listing and "sk-very-secret" not in listing

