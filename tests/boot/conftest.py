"""Fixtures for the CLI tests: ``python cli.py`` as a real subprocess against a scripted server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "cli.py"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: none of the developer's agent settings or keys."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENT_", "GEMINI_")) and k not in ("OPENAI_API_KEY", "LOCAL_CODER_REEXEC")}
    env.update({"PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "TERM": "dumb"})
    env.update(extra)
    return env


@dataclass
class Done:
    """A finished CLI run."""

    rc: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.out)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def scripted() -> Iterator[Callable[..., Any]]:
    """``scripted(replies, **kw)``: a started :class:`gate.scripted_server.ScriptedServer` (real uvicorn)."""
    module = pytest.importorskip("gate.scripted_server")
    started: list[Any] = []

    def start(replies: list[Any], **kw: Any) -> Any:
        kw.setdefault("n_ctx", 8192)
        server = module.ScriptedServer(replies, **kw).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def make_env() -> Callable[..., dict[str, str]]:
    return clean_env


@pytest.fixture
def cli_argv(workspace: Path) -> Callable[..., list[str]]:
    """``cli_argv(*args, server=…)``: the command line that runs ``cli.py`` on ``server`` in ``workspace``."""
    if not VENV_PYTHON.exists():
        pytest.skip(f"the project's venv {VENV_PYTHON} is missing (run `bash runsv.sh` once)")

    def argv(*args: str, server: Any = None, python: str | os.PathLike[str] = VENV_PYTHON,
             python_flags: tuple[str, ...] = ()) -> list[str]:
        # the fixture's flags first: everything after a subcommand's name belongs to the subcommand
        line = [str(python), *python_flags, str(CLI)]
        if server is not None:
            line += ["--model-url", server.base_url, "--model", server.model]
        if "--workspace" not in args:
            line += ["--workspace", str(workspace)]
        return line + list(args)

    return argv


@pytest.fixture
def cli(cli_argv: Callable[..., list[str]], tmp_path: Path) -> Callable[..., Done]:
    """``cli(*args, server=…, stdin=…, python=…)``: run ``cli.py`` in the temp folder and wait for it."""

    def run(*args: str, server: Any = None, stdin: str | None = None, python: str | os.PathLike[str] = VENV_PYTHON,
            python_flags: tuple[str, ...] = (), env: dict[str, str] | None = None, timeout: float = 90) -> Done:
        argv = cli_argv(*args, server=server, python=python, python_flags=python_flags)
        proc = subprocess.run(argv, input=stdin if stdin is not None else "", capture_output=True, text=True,
                              cwd=tmp_path, env=env or clean_env(), timeout=timeout)
        return Done(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def system_python() -> Path:
    """A Python outside the project's venv (the base install the venv was made from)."""
    for candidate in (Path(sys.base_prefix) / "bin" / "python3", Path("/usr/bin/python3")):
        if candidate.exists() and not str(candidate.resolve()).startswith(str(REPO / ".venv")):
            return candidate
    pytest.skip("no Python outside the project's venv on this machine")


@pytest.fixture
def cli_file() -> Path:
    return CLI


# --- the chat in a pseudo-terminal --------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]|[\x08\x07]")


class Terminal:
    """A program running in a pty; :meth:`wait_for` looks at what the screen was sent, escapes removed."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        import pexpect

        self.pexpect = pexpect
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=cwd, encoding="utf-8",
                                   dimensions=(40, 120), timeout=30)
        self.raw = ""
        self.seen = 0  # where the next wait_for starts looking
        self.ended = False  # the program closed the terminal

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw).replace("\r", "")

    def _pump(self, timeout: float) -> None:
        try:
            self.raw += self.child.read_nonblocking(65536, timeout=timeout)
        except self.pexpect.TIMEOUT:
            pass
        except self.pexpect.EOF:
            self.ended = True

    def wait_for(self, wanted: str, timeout: float = 30) -> str:
        """Wait until ``wanted`` appears after the previous match; returns the screen text up to it."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.text.find(wanted, self.seen)
            if at >= 0:
                shown = self.text[self.seen:at + len(wanted)]
                self.seen = at + len(wanted)
                return shown
            if time.monotonic() > deadline or self.ended:
                why = "the program ended" if self.ended else f"waited {timeout} s"
                raise AssertionError(f"{wanted!r} not on the screen ({why}); it shows:\n"
                                     f"{self.text[self.seen:][-3000:]}")
            self._pump(0.1)

    def prompt(self) -> None:
        self.wait_for("›")

    def send(self, line: str) -> None:
        self.child.sendline(line)

    def exit_status(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while not self.ended and self.child.isalive() and time.monotonic() < deadline:
            self._pump(0.1)
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else 128 + (self.child.signalstatus or 0)


@pytest.fixture
def terminal() -> Iterator[Callable[[list[str], dict[str, str], str], Terminal]]:
    """``terminal(argv, env, cwd)``: a started :class:`Terminal`, ended after the test."""
    pytest.importorskip("pexpect")
    started: list[Terminal] = []

    def start(argv: list[str], env: dict[str, str], cwd: str) -> Terminal:
        term = Terminal(argv, env, cwd)
        started.append(term)
        return term

    yield start
    for term in started:
        if term.child.isalive():
            term.child.terminate(force=True)


@pytest.fixture
def chat(terminal: Callable[..., Terminal], cli_argv: Callable[..., list[str]],
         tmp_path: Path) -> Callable[..., Terminal]:
    """``chat(server, *args, **env)``: ``python cli.py`` (the chat) on ``server`` in a pty; ``env`` added."""

    def start(server: Any, *args: str, **env: str) -> Terminal:
        full = clean_env(TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1", HOME=str(tmp_path), COLUMNS="120", **env)
        return terminal(cli_argv(*args, server=server), full, str(tmp_path))

    return start


@pytest.fixture
def gemini() -> Iterator[Callable[..., Any]]:
    """``gemini(replies)``: a started :class:`gate.scripted_gemini.ScriptedGemini` (key ``test-key``)."""
    module = pytest.importorskip("gate.scripted_gemini")
    started: list[Any] = []

    def start(replies: list[Any], **kw: Any) -> Any:
        server = module.ScriptedGemini(replies, **kw).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def gemini_env(server: Any) -> dict[str, str]:
    """The environment that points a CLI subprocess at the Gemini stand-in ``server``."""
    return {"GEMINI_BASE_URL": server.base_url, "GEMINI_API_KEY": server.api_key, "GEMINI_MODEL": "gemini-test"}


@pytest.fixture
def gemini_env_of() -> Callable[[Any], dict[str, str]]:
    return gemini_env
