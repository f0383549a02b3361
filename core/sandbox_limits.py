"""Resource limits for the sandbox: the limits themselves, how they are set, and the pids cgroup.

Split from ``core/sandbox.py``; see its docstring for what is covered. Why ``prlimit``: the
limits must be set in a process of their own before bwrap starts (no ``preexec_fn`` while the
agent runs threads), and ``RLIMIT_NPROC`` must be set *inside* the new user namespace, where it
counts only the sandbox's processes. Root is exempt from ``RLIMIT_NPROC`` (the kernel looks at
the host uid, which stays 0 whatever uid the sandbox shows), hence the cgroup, and where no
``pids`` cgroup is writable the watchdog (:class:`ProcessWatch`).
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Limits:
    """Resource limits for everything in one sandbox; ``None`` means no limit."""

    cpu_s: int | None = 300
    memory_bytes: int | None = 4 << 30  # address space per process; Python + numpy fit easily
    file_bytes: int | None = 1 << 30
    processes: int | None = 256
    #: root: cap the processes with a pids cgroup when one is writable (False: the watchdog does)
    pids_cgroup: bool = True


def process_cap(limits: Limits) -> str | None:
    """How the number of processes is capped for ``limits``, in words; ``None`` when it is not."""
    if limits.processes is None:
        return None
    if nproc_prefix(limits):
        return "RLIMIT_NPROC in the sandbox's user namespace"
    if os.geteuid() == 0 and limits.pids_cgroup and PidsCgroup.available():
        return "pids cgroup"
    return "watchdog: the sandbox is killed when it passes the cap"


def nproc_prefix(limits: Limits) -> list[str]:
    """``prlimit --nproc`` to run inside the user namespace, where it counts only the sandbox's processes."""
    n = limits.processes
    prlimit = shutil.which("prlimit", path=STANDARD_PATH)
    if n is None or prlimit is None or os.geteuid() == 0:
        return []
    return [prlimit, f"--nproc={n}:{n}", "--"]


def launcher(limits: Limits, cgroup_procs: str | None) -> tuple[list[str], Callable[[], None] | None]:
    """The argv prefix that joins the pids cgroup and sets the inherited limits before bwrap starts.

    ``prlimit`` (util-linux) does it in a process of its own, so no Python runs between fork and
    exec (``preexec_fn`` is unsafe while other threads run, and forces a full fork of the agent's
    possibly large process). Without ``prlimit``, a ``preexec_fn`` does the same.
    """
    prlimit = shutil.which("prlimit", path=STANDARD_PATH)
    if prlimit is None:
        return [], _preexec(limits, cgroup_procs)
    flags = ["--core=0"]
    if limits.cpu_s is not None:
        flags.append(f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}")  # SIGXCPU, then SIGKILL a second later
    if limits.memory_bytes is not None:
        flags.append(f"--as={limits.memory_bytes}:{limits.memory_bytes}")
    if limits.file_bytes is not None:
        flags.append(f"--fsize={limits.file_bytes}:{limits.file_bytes}")
    prefix = [prlimit, *flags, "--"]
    if cgroup_procs:
        prefix = ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', cgroup_procs, *prefix]
    return prefix, None


def _preexec(limits: Limits, cgroup_procs: str | None) -> Callable[[], None]:
    """Runs in the child between fork and exec: join the pids cgroup, set the inherited limits."""
    import resource

    def apply() -> None:
        if cgroup_procs:
            fd = os.open(cgroup_procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if limits.cpu_s is not None:
            # soft limit sends SIGXCPU, the hard one a second later SIGKILL
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        if limits.memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if limits.file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))

    return apply


class ProcessWatch:
    """Kills a sandbox whose processes pass ``limit``: the cap when neither RLIMIT_NPROC nor a cgroup can be had.

    Counts the PIDs in the sandbox's own ``/proc`` (seen from the host through its PID 1's root)
    every ``interval_s``; a count is trusted only while that PID 1 (``inner_pidfd``) still runs,
    so a reused pid is never read. ``kill`` ends the whole sandbox.
    """

    def __init__(self, inner_pid: int, inner_pidfd: int, limit: int, kill: Callable[[], None],
                 interval_s: float = 0.02) -> None:
        self.limit, self.tripped = limit, False
        self._proc_dir = f"/proc/{inner_pid}/root/proc"
        self._host_proc = os.stat("/proc").st_dev
        self._pidfd, self._kill, self._interval = inner_pidfd, kill, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-process-watch", daemon=True)
        self._thread.start()

    def _ended(self) -> bool:
        poller = select.poll()  # poll, not select: a descriptor past 1023 is fine
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(0))

    def _count(self) -> int | None:
        """The sandbox's processes now; ``None`` when they cannot be counted this time."""
        try:
            # until the sandbox has mounted its own /proc, this path shows the host's (or nothing)
            if os.stat(self._proc_dir).st_dev == self._host_proc:
                return None
            with os.scandir(self._proc_dir) as entries:
                n = sum(1 for e in entries if e.name.isdigit())
        except OSError:
            return None
        return None if self._ended() else n  # read from a reused pid: not this sandbox's

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                if self._ended():
                    return
                n = self._count()
                if n is not None and n > self.limit:
                    break
            else:
                return
        except Exception:  # noqa: BLE001 - a watchdog that cannot watch ends the sandbox (fails closed)
            pass
        self.tripped = True
        self._kill()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)


class PidsCgroup:
    """A ``pids`` cgroup capping the process count, for root (whom RLIMIT_NPROC does not bind)."""

    @classmethod
    def available(cls) -> bool:
        return cls._own_pids_dir() is not None

    def __init__(self, max_pids: int) -> None:
        self.path: str | None = None
        base = self._own_pids_dir()
        if base is None:
            return
        path = os.path.join(base, f"agent-sandbox-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.mkdir(path)
        except OSError:
            return
        try:
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(max_pids))
        except OSError:
            self._remove(path)
            return
        self.path = path

    @staticmethod
    def _own_pids_dir() -> str | None:
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, rel = line.split(":", 2)
            if "pids" in controllers.split(","):
                base = os.path.join("/sys/fs/cgroup/pids", rel.lstrip("/"))
                if os.access(base, os.W_OK):
                    return base
        for line in lines:  # cgroup v2: only if pids is delegated to our own cgroup
            if line.startswith("0::"):
                base = os.path.join("/sys/fs/cgroup", line[3:].lstrip("/"))
                try:
                    if "pids" in Path(base, "cgroup.subtree_control").read_text().split() and os.access(base, os.W_OK):
                        return base
                except OSError:
                    return None
        return None

    @property
    def procs_file(self) -> str | None:
        return os.path.join(self.path, "cgroup.procs") if self.path else None

    @staticmethod
    def _remove(path: str, wait_s: float = 0.0) -> bool:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                os.rmdir(path)
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:
                # EBUSY while the kernel is still tearing down the killed sandbox's processes
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return False
                time.sleep(0.005)

    def close(self) -> None:
        """Remove the cgroup: at once when it is empty, else from a short-lived thread once it empties.

        The sandbox's processes are gone from the caller's point of view (bwrap has exited) but the
        kernel may take a few milliseconds to release them; nobody should wait for that.
        """
        if self.path:
            path, self.path = self.path, None
            if not self._remove(path):
                threading.Thread(target=self._remove, args=(path, 10.0), name="cgroup-cleanup", daemon=True).start()
