"""Resource limits for the sandbox: the limits themselves, how they are set, and the pids cgroup.

Split from ``core/sandbox.py``; see its docstring for what is covered. Why ``prlimit``: the
limits must be set in a process of their own before bwrap starts (no ``preexec_fn`` while the
agent runs threads), and ``RLIMIT_NPROC`` must be set *inside* the new user namespace, where it
counts only the sandbox's processes. Root is exempt from ``RLIMIT_NPROC``, hence the cgroup.
"""

from __future__ import annotations

import errno
import os
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


class PidsCgroup:
    """A ``pids`` cgroup capping the process count, for root (whom RLIMIT_NPROC does not bind)."""

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
