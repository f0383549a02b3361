"""Start-up safety: a key given as a flag (seen in `ps`) is warned about; a workspace holding the agent is refused."""

from __future__ import annotations

import pytest

from boot import cli, serve


def test_the_agent_warns_about_a_key_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["--gemini-api-key", "k-123", "--model-url", "http://127.0.0.1:9/v1", "-p", "x"])
    err = capsys.readouterr().err
    assert "warning: --gemini-api-key puts the key on the command line, where `ps` shows it" in err
    assert "set GEMINI_API_KEY in the environment or in .env instead" in err
    cli.main(["--model-url", "http://127.0.0.1:9/v1", "-p", "x"])  # control: no key flag, no warning
    assert "puts the key on the command line" not in capsys.readouterr().err


def test_the_server_warns_about_a_key_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    plan = ["--plan", "--json", "--profile", "qwen2.5-coder-0.5b-instruct-q8_0", "--vram-gb", "8"]
    serve.main(["--api-key", "k-123", *plan])
    assert "warning: --api-key puts the key on the command line" in capsys.readouterr().err
    serve.main(plan)
    assert "puts the key on the command line" not in capsys.readouterr().err


def test_a_workspace_holding_the_agent_stops_the_start_before_anything_is_made(
        tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    rc = cli.main(["--workspace", str(home), "--model-url", "http://127.0.0.1:9/v1", "-p", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is your home folder" in err[0], err
    assert list(home.iterdir()) == []  # no state folder, no .gitignore made in it
    work = home / "project"  # control: a project inside the home folder gets past this check
    work.mkdir()
    cli.main(["--workspace", str(work), "--model-url", "http://127.0.0.1:9/v1", "-p", "x"])
    assert "is your home folder" not in capsys.readouterr().err
