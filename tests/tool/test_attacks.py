"""The attack suite: each property tried through the real ``shell`` and ``pyexe`` tools in the real
sandbox (and ``fetch`` against a real local server). Each attack must fail safely and leave no
trace outside the workspace: the files and processes are checked afterwards, on the host.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from core import sandbox
from core.tools import ToolResult
from sandbox_helpers import (Listener, LocalSite, processes_working_in, require_bwrap, settings_for,
                             wait_no_process_with)
from tool.fetch import fetch_tool
from tool.pyexe import PythonSession
from tool.shell import shell_tool

TIMEOUT_S = 20.0


class Attacker:
    """Runs an attack through one tool: ``shell`` (a command) or ``pyexe`` (Python code)."""

    def __init__(self, kind: str, root: Path) -> None:
        require_bwrap()
        self.kind = kind
        self.root = root
        self.ws = root / "ws"
        self.settings = settings_for(self.ws)
        self.policy = sandbox.SandboxPolicy.from_settings(
            self.settings, timeout_s=TIMEOUT_S, limits=sandbox.Limits(memory_bytes=1 << 30, processes=128))
        self.shell = shell_tool(self.settings, policy=self.policy)
        self.session = PythonSession(self.settings, policy=self.policy)

    def run(self, shell: str, py: str, timeout_s: float | None = None) -> ToolResult:
        if self.kind == "shell":
            args = {"command": shell} | ({"timeout_s": timeout_s} if timeout_s else {})
            result = self.shell.fn(**args)
        else:
            result = self.session.execute(py, timeout_s=timeout_s)
        assert isinstance(result, ToolResult)
        return result

    def close(self) -> None:
        self.session.close()


@pytest.fixture(params=["shell", "pyexe"])
def attacker(request: pytest.FixtureRequest, tmp_path: Path):
    a = Attacker(request.param, tmp_path)
    yield a
    a.close()


def _session_processes(outer_pid: int) -> set[int]:
    """The REPL's own processes: the outer bwrap, its PID 1 and the driver (a chain of first children)."""
    chain, pid = {outer_pid}, outer_pid
    for _ in range(4):
        try:
            children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        except OSError:
            break
        if not children:
            break
        pid = int(children[0])
        chain.add(pid)
    return chain


def _marker() -> str:
    return "attack-" + uuid.uuid4().hex[:12]


def _write(path: str) -> tuple[str, str]:
    """A shell command and Python code that write a file at ``path``."""
    return f"echo pwned > {path}", f"open({path!r}, 'w').write('pwned')"


# --- writing outside ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["tmp", "home", "home_var", "project", "dotdot", "absolute_sibling"])
def test_write_outside_the_workspace_leaves_no_file(attacker: Attacker, where: str) -> None:
    name = _marker()
    targets = {
        "tmp": (f"/tmp/{name}", Path("/tmp") / name),
        "home": (str(Path.home() / name), Path.home() / name),
        "home_var": (f"$HOME/{name}", Path.home() / name),
        "project": (str(sandbox.PROJECT_ROOT / name), sandbox.PROJECT_ROOT / name),
        "dotdot": (f"../{name}", attacker.root / name),
        "absolute_sibling": (str(attacker.root / name), attacker.root / name),
    }
    inside, host_path = targets[where]
    shell, py = _write(inside)
    if where == "home_var":
        py = f"import os; open(os.path.expandvars({inside!r}), 'w').write('pwned')"
    attacker.run(shell, py)
    assert not host_path.exists()


def test_symlink_planted_in_the_workspace_does_not_lead_out(attacker: Attacker) -> None:
    outside = attacker.root / "outside"
    outside.mkdir()
    (attacker.ws / "link").symlink_to(outside)
    shell, py = _write("link/stolen.txt")
    attacker.run(shell, py)
    assert list(outside.iterdir()) == []


def test_symlink_made_by_the_code_does_not_lead_out(attacker: Attacker) -> None:
    outside = attacker.root / "outside2"
    outside.mkdir()
    attacker.run(f"ln -s {outside} l2 && echo pwned > l2/stolen.txt",
                 f"import os; os.symlink({str(outside)!r}, 'l2'); open('l2/stolen.txt', 'w').write('pwned')")
    assert list(outside.iterdir()) == []


# --- reading secrets ------------------------------------------------------------------------------


def test_secret_in_the_home_folder_cannot_be_read(attacker: Attacker) -> None:
    secret = "home-secret-" + uuid.uuid4().hex
    path = Path.home() / f".{_marker()}"
    path.write_text(secret)
    try:
        result = attacker.run(f"cat {path}; cat ~/{path.name}",
                              f"print(open({str(path)!r}).read())")
    finally:
        path.unlink()
    assert secret not in result.content


@pytest.mark.parametrize("layout", ["dotenv_above_workspace", "dotenv_in_workspace", "session_db"])
def test_project_secrets_cannot_be_read(tmp_path: Path, layout: str, request: pytest.FixtureRequest) -> None:
    require_bwrap()
    secret = "project-secret-" + uuid.uuid4().hex
    project = tmp_path / "project"
    ws = project if layout == "dotenv_in_workspace" else project / "workspace"
    ws.mkdir(parents=True)
    target = {"dotenv_above_workspace": project / ".env", "dotenv_in_workspace": project / ".env",
              "session_db": ws / ".agent" / "sessions.db"}[layout]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"GEMINI_API_KEY={secret}\n")
    settings = settings_for(ws)
    policy = sandbox.SandboxPolicy.from_settings(settings, timeout_s=TIMEOUT_S)
    rel = os.path.relpath(target, ws)
    shell = shell_tool(settings, policy=policy).fn(command=f"cat {rel}; cat {target}; grep -r {secret[:20]} . /tmp")
    with PythonSession(settings, policy=policy) as session:
        py = session.execute(f"print(open({str(target)!r}).read())\nprint(open({rel!r}).read())")
    assert secret not in shell.content and secret not in py.content
    assert target.read_text() == f"GEMINI_API_KEY={secret}\n"


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "GEMINI_API_KEY", "AGENT_API_KEY", "GITHUB_TOKEN"])
def test_api_keys_in_the_environment_do_not_reach_the_code(attacker: Attacker, variable: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-" + uuid.uuid4().hex
    monkeypatch.setenv(variable, secret)
    result = attacker.run("env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'",
                          "import os; print(dict(os.environ)); print(open('/proc/1/environ', 'rb').read())")
    assert secret not in result.content


# --- network and processes ------------------------------------------------------------------------


def test_a_port_listening_on_localhost_cannot_be_reached(attacker: Attacker) -> None:
    listener = Listener()
    try:
        result = attacker.run(
            f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {listener.port}), 3).send(b'x')\"",
            f"import socket\nsocket.create_connection(('127.0.0.1', {listener.port}), 3).send(b'x')")
        assert not listener.connected()
    finally:
        listener.close()
    assert not result.ok


def test_a_process_outside_the_sandbox_cannot_be_signalled(attacker: Attacker) -> None:
    victim = subprocess.Popen(["sleep", "300"])
    try:
        attacker.run(f"kill -9 {victim.pid}", f"import os; os.kill({victim.pid}, 9)")
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_a_fork_bomb_is_contained_and_cleaned_up(attacker: Attacker) -> None:
    marker = _marker()
    bomb = f"import os\\nwhile True:\\n    os.fork()  # {marker}"
    result = attacker.run(f"python3 -c $'{bomb}'",
                          f"import os\nwhile True:\n    os.fork()  # {marker}", timeout_s=8)
    assert not result.ok
    assert wait_no_process_with(marker) == []
    # pyexe's forks carry the driver's command line, not the marker: count what works in the workspace
    own = _session_processes(attacker.session._proc.pid) if attacker.session._proc else set()
    assert wait_for(lambda: set(processes_working_in(attacker.ws)) <= own)
    follow_up = attacker.run("echo alive", "print('alive')")
    assert "alive" in follow_up.content


def test_a_memory_hog_fails_without_taking_the_memory(attacker: Attacker) -> None:
    hog = "chunks = []\nwhile True:\n    chunks.append(b\"x\" * (64 << 20))"
    escaped = hog.replace("\n", "\\n")
    result = attacker.run(f"python3 -c $'{escaped}'", hog)
    assert not result.ok
    assert "MemoryError" in result.content
    if attacker.kind == "pyexe":  # the REPL survives its own MemoryError
        assert attacker.session.execute("6 * 7").content == "42"


def test_a_process_ignoring_sigterm_does_not_outlive_its_timeout(attacker: Attacker) -> None:
    marker = f"{uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"  # a unique sleep length
    result = attacker.run(
        f"trap '' TERM; setsid sh -c \"trap '' TERM; sleep {marker}\" & sleep {marker}",
        f"import signal, subprocess, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\ntime.sleep({marker})",
        timeout_s=2)
    assert not result.ok
    expected = "state was lost" if attacker.kind == "pyexe" else "timed out"
    assert expected in result.content
    assert wait_no_process_with(f"sleep\x00{marker}") == []


def test_a_background_process_does_not_outlive_the_call(attacker: Attacker) -> None:
    marker = f"{uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    result = attacker.run(f"nohup setsid sleep {marker} > /dev/null 2>&1 & echo started",
                          f"import subprocess\nsubprocess.Popen(['setsid', 'sleep', '{marker}'])\nprint('started')")
    assert result.ok and "started" in result.content
    assert wait_no_process_with(f"sleep\x00{marker}") == []


def test_a_hundred_megabytes_of_output_is_cut_without_buffering_it(attacker: Attacker) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = attacker.run("head -c 100000000 /dev/zero | tr '\\0' x",
                          "import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 100_000)")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert result.data["truncated"] is True
    assert len(result.content) < 2 * attacker.policy.output_bytes
    assert "bytes of output omitted" in result.content
    assert grown_kib < 50 * 1024


# --- fetch ----------------------------------------------------------------------------------------


@pytest.fixture
def site():
    big = b"y" * (8 << 20)

    def redirect_to(location: str):
        def handler(h) -> None:
            h.send_response(302)
            h.send_header("Location", location)
            h.end_headers()
        return handler

    def secret(h) -> None:
        h.send_response(200)
        h.end_headers()
        h.wfile.write(b"internal secret")

    def huge(h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(big) * 12))
        h.end_headers()
        sent = 0
        try:
            for _ in range(12):
                h.wfile.write(big)
                sent += len(big)
        except (BrokenPipeError, ConnectionResetError):
            pass
        site.sent["/huge"] = sent

    site = LocalSite({"/secret": secret, "/huge": huge})
    port = site.port
    site.routes.update({
        "/to-loopback": redirect_to(f"http://127.0.0.1:{port}/secret"),
        "/to-localhost": redirect_to(f"http://localhost:{port}/secret"),
        "/to-mapped": redirect_to(f"http://[::ffff:127.0.0.1]:{port}/secret"),
        "/to-private": redirect_to("http://10.20.30.40/secret"),
        "/to-metadata": redirect_to("http://169.254.169.254/latest/meta-data/"),
    })
    yield site
    site.close()


@pytest.mark.parametrize("route", ["/to-loopback", "/to-localhost", "/to-mapped", "/to-private", "/to-metadata"])
def test_fetch_refuses_a_redirect_to_a_local_or_private_address(tmp_path: Path, site: LocalSite, route: str) -> None:
    tool = fetch_tool(settings_for(tmp_path / "ws"), pinned_hosts_for_tests={"site.test": "127.0.0.1"})
    result = tool.fn(url=f"http://site.test:{site.port}{route}")
    assert isinstance(result, ToolResult) and not result.ok
    assert result.content.startswith("Error: refused:")
    assert "/secret" not in site.hits


def test_fetch_refuses_loopback_by_default(tmp_path: Path, site: LocalSite) -> None:
    tool = fetch_tool(settings_for(tmp_path / "ws"))
    result = tool.fn(url=f"http://127.0.0.1:{site.port}/secret")
    assert not result.ok and "loopback" in result.content
    assert site.hits == []


def test_fetch_stops_reading_a_body_larger_than_the_cap(tmp_path: Path, site: LocalSite) -> None:
    tool = fetch_tool(settings_for(tmp_path / "ws"), pinned_hosts_for_tests={"site.test": "127.0.0.1"})
    result = tool.fn(url=f"http://site.test:{site.port}/huge", max_bytes=100_000)
    assert result.ok and result.data["bytes"] == 100_000 and result.data["cut"] is True
    assert "stopped reading at the 100000-byte cap" in result.content
    # the handler records what it managed to send once the client hung up
    assert wait_for(lambda: "/huge" in site.sent)
    assert site.sent["/huge"] < 48 << 20  # of 96 MiB offered


def wait_for(predicate, deadline_s: float = 10.0) -> bool:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True
