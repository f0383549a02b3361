"""``cli.py skills list|show|remove|restore`` and the table ``/skills`` prints."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from boot.settings import Settings
from boot.skills_cmd import main, skill_rows, skills_table
from tool.skills.files import SkillStore

REPO = Path(__file__).resolve().parents[2]

ADD = '''def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first
        b: the second
    """
    return a + b
'''


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    root = tmp_path / "ws"
    root.mkdir()
    return Settings(workspace=root)


def promoted(settings: Settings, body: str = ADD) -> None:
    SkillStore(settings.workspace_root).save("add", "add", body, source="lib/add.py", function_sha256="0" * 64,
                                             description="Add two numbers.")


def run(argv: list[str], settings: Settings) -> tuple[int, str]:
    buffer = io.StringIO()
    code = main(argv, settings, console=Console(file=buffer, width=200, no_color=True))
    return code, buffer.getvalue()


def test_list_shows_loaded_broken_and_hand_written_skills(settings: Settings, capsys):
    promoted(settings)
    (settings.workspace_root / "skills" / "broken.py").write_text("def broken(:\n")
    (settings.workspace_root / "skills" / "hand.py").write_text(ADD.replace("def add", "def hand"))
    code, out = run(["list"], settings)
    assert code == 0
    assert "add" in out and "Add two numbers." in out and "broken" in out and "not loaded" in out
    code = main(["list", "--json"], settings)
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["add"]["status"] == "ok (edited by hand)"  # the recorded hash is not the function's
    assert (rows["add"]["version"], rows["add"]["source"], rows["add"]["versions"]) == (1, "lib/add.py", [1])
    assert rows["broken"]["status"] == "not loaded" and "does not parse" in rows["broken"]["problem"]
    assert (rows["hand"]["status"], rows["hand"]["source"], rows["hand"]["version"]) == ("ok", "(hand-written)", None)


def test_show_prints_the_header_versions_and_source(settings: Settings, capsys):
    promoted(settings)
    code, out = run(["show", "add"], settings)
    assert code == 0 and "add(a, b)" in out and "kept versions: add@1" in out and "return a + b" in out
    assert main(["show", "add", "--json"], settings) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["header"]["version"] == "1" and shown["source_code"] == ADD
    assert [v["version"] for v in shown["history"]] == [1]


def test_show_of_an_unknown_or_malformed_name_fails_with_a_hint(settings: Settings, capsys):
    assert main(["show", "nope"], settings) == 1
    assert "there is no skill named 'nope'" in capsys.readouterr().err
    assert main(["show", "../etc"], settings) == 1
    assert "lower_snake_case" in capsys.readouterr().err


def test_remove_then_restore(settings: Settings, capsys):
    promoted(settings)
    code, out = run(["remove", "add"], settings)
    assert code == 0 and "skills restore add@1" in out
    assert not (settings.workspace_root / "skills" / "add.py").exists()
    rows = {r["name"]: r for r in skill_rows(settings)}
    assert rows["add"]["status"] == "removed"
    code, out = run(["restore", "add@1"], settings)
    assert code == 0 and "restored add@1 as version 2" in out
    assert {r["name"]: r["status"] for r in skill_rows(settings)}["add"].startswith("ok")
    assert main(["remove", "ghost"], settings) == 1
    assert "no skill named 'ghost'" in capsys.readouterr().err
    assert main(["restore", "add"], settings) == 1
    assert "is not NAME@VERSION" in capsys.readouterr().err
    assert main(["restore", "add@9"], settings) == 1
    assert "no version 9" in capsys.readouterr().err


def test_the_chat_table_says_how_to_make_a_skill_when_there_are_none(settings: Settings):
    buffer = io.StringIO()
    Console(file=buffer, width=120, no_color=True).print(skills_table(settings))
    assert "the agent makes one with promote_skill" in " ".join(buffer.getvalue().split())


def test_it_runs_as_a_module(settings: Settings):
    promoted(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    env["AGENT_WORKSPACE"] = str(settings.workspace_root)
    done = subprocess.run([sys.executable, "-m", "boot.skills_cmd", "list", "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [r["name"] for r in json.loads(done.stdout)] == ["add"]
    done = subprocess.run([sys.executable, "-m", "boot.skills_cmd", "frobnicate"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice" in done.stderr
