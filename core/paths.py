"""Workspace path confinement for the tools that touch files.

A path from the model is relative to the workspace root. Refused: absolute paths, ``~``, paths
whose ``..`` leads outside, and symlinks (anywhere along the path) whose target lies outside. The
path is resolved **once**; the protected names (:data:`PROTECTED`, and :data:`READ_ONLY` for
writes) are checked on the components of that resolution, and exactly those components are then
opened, one at a time with ``O_NOFOLLOW`` relative to the parent's descriptor (or in one
``openat2`` call with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` where the kernel has it). So the
file opened is the file whose name was checked: a symlink swapped in between the check and the
use makes the call fail instead of escaping or reaching ``.env``. The opened file's identity
(``fstat``) is also compared with the workspace's own protected files, so a hard link or a rename
cannot hand one over under another name.

- :func:`open_confined` opens a regular file (read, write, append, exclusive create);
- :func:`confined_dir` yields a descriptor of a folder (for listing and walking with ``dir_fd``);
- :func:`write_atomic` replaces a file's content atomically (temp file in the same folder, rename).

Covered: the file tools (read, write, edit, list, search). Not covered here: code run by the
shell and Python tools, which the operating-system sandbox confines (``core/sandbox.py``), and
hard links (a hard link inside the workspace to a file outside is the file itself; making one
needs access to both places). POSIX only (``O_NOFOLLOW`` and ``dir_fd``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import stat
from pathlib import Path
from typing import IO, Any, Iterator

from core.errors import ToolError

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: flags that open a folder without following a symlink in its place
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_DIR_FLAGS = DIR_FLAGS  # the name this module used first


#: names the file tools neither read nor write, at any depth: the secrets file that
#: ``boot/settings.py`` reads (``AGENT_SANDBOX``, API keys) and the agent's own state folder.
#: Shared with the sandbox, which should keep sandboxed code away from the same names.
PROTECTED = (".env", ".agent")
#: names the file tools read but never write, at any depth: git runs what ``.git/hooks/*`` and
#: ``.git/config`` (``core.fsmonitor``, ``core.pager``, aliases) name, unsandboxed, at the
#: person's next ``git status``. The sandbox mounts the workspace's ``.git`` read-only too.
READ_ONLY = (".git",)


class PathEscape(ToolError):
    """A path leads outside the workspace."""


class ProtectedPath(ToolError):
    """A path names a protected file or folder (:data:`PROTECTED`)."""


def protected_part(real_path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str | None:
    """The :data:`PROTECTED` name that ``real_path`` (a resolved path inside ``root``) is or lies in."""
    rel = os.path.relpath(os.fspath(real_path), os.path.realpath(root))
    if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
        return None
    return next((part for part in rel.split(os.sep) if part in PROTECTED), None)


def is_protected(real_path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``real_path`` (resolved, inside ``root``) is or lies inside one of :data:`PROTECTED`."""
    return protected_part(real_path, root) is not None


def _protected_error(shown: str, part: str) -> ProtectedPath:
    if part in READ_ONLY:
        return ProtectedPath(f"{shown!r} is in {part}/, which the file tools do not write: git runs hooks and "
                             "commands named in its config outside the sandbox",
                             hint="reading it is fine; ask the person to change git's settings or hooks themselves")
    what = ("the secrets and settings file (API keys, AGENT_SANDBOX)" if part == ".env"
            else "the agent's own state (sessions, memories)")
    return ProtectedPath(f"{shown!r} is {part if part == '.env' else 'inside ' + part + '/'}, {what}; "
                         "the file tools do not read or write it",
                         hint="ask the person to change it themselves if it must change")


def refuse_protected(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """The real path of ``path`` in ``root``; raises :class:`ProtectedPath` for a protected name.

    A courtesy for early, readable refusals: :func:`open_confined`, :func:`write_atomic` and
    :func:`confined_dir` check again on the components they actually open.
    """
    real = resolve_in_workspace(root, path)
    part = protected_part(real, root)
    if part is not None:
        raise _protected_error(os.fspath(path), part)
    return real


def _check_names(parts: list[str], shown: str, *, write: bool) -> None:
    """Refuse components that are protected (or, for a write, read-only) names."""
    for part in parts:
        if part in PROTECTED or (write and part in READ_ONLY):
            raise _protected_error(shown, part)


def _outside(path: str, hint: str | None = None) -> PathEscape:
    return PathEscape(
        f"{path!r} is outside the workspace",
        hint=hint or "use a path relative to the workspace root, without '..' leading out of it",
    )


def _through_link(path: str) -> PathEscape:
    return PathEscape(
        f"{path!r} goes through a symbolic link that was not checked (it changed during the call, or it loops)",
        hint="use a path inside the workspace that does not go through that link",
    )


def resolve_in_workspace(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """The real path of ``path`` inside ``root``; raises :class:`PathEscape` when it leads out.

    The target need not exist (for writes); its existing ancestors are resolved through symlinks.
    """
    text = os.fspath(path)
    if "\x00" in text:
        raise ToolError("the path contains a NUL byte", hint="pass a plain relative path")
    if text.startswith("~"):
        raise _outside(text, "'~' is not expanded: use a path relative to the workspace root")
    real_root = Path(os.path.realpath(root))
    if os.path.isabs(text):
        inside = Path(os.path.realpath(text))
        if inside == real_root or real_root in inside.parents:
            rel = relative_to_workspace(real_root, inside)
            raise _outside(text, f"paths are relative to the workspace root: use {rel!r}")
        raise _outside(text)
    candidate = Path(os.path.realpath(real_root / (text or ".")))
    if candidate != real_root and real_root not in candidate.parents:
        lexical = Path(os.path.normpath(real_root / text))
        if lexical == real_root or real_root in lexical.parents:
            raise PathEscape(f"{text!r} leads outside the workspace through a symbolic link",
                             hint="the file tools do not follow links out of the workspace; use a path inside it")
        raise _outside(text)
    return candidate


def relative_to_workspace(root: str | os.PathLike[str], real: Path) -> str:
    """How to name ``real`` to the model: relative to the workspace, ``.`` for the root."""
    rel = os.path.relpath(real, os.path.realpath(root))
    return "." if rel == "." else rel.replace(os.sep, "/")


def _parts(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """The real root and the components of ``path`` below it, checked by :func:`resolve_in_workspace`."""
    real = resolve_in_workspace(root, path)
    real_root = os.path.realpath(root)
    rel = os.path.relpath(real, real_root)
    return real_root, ([] if rel == "." else rel.split(os.sep))


# --- openat2 (Linux >= 5.6): the whole folder chain in one call, no symlink and nothing above ---

_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
_OPENAT2_NR = 437 if platform.machine() in ("x86_64", "aarch64", "riscv64", "ppc64le", "s390x", "i686") else None


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Openat2:
    """``openat2`` through ``syscall(2)``; ``usable`` turns false for good on ENOSYS (old kernel, seccomp)."""

    def __init__(self) -> None:
        self.usable = _OPENAT2_NR is not None and os.name == "posix"
        self._syscall = None
        if self.usable:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                self._syscall = libc.syscall
                self._syscall.restype = ctypes.c_long
            except (OSError, AttributeError):
                self.usable = False

    def open_dir(self, dir_fd: int, rel: str) -> int | None:
        """A descriptor of the folder ``rel`` below ``dir_fd``; ``None``: use the component walk instead.

        Raises ``OSError`` (ELOOP for a symlink on the way, ENOTDIR, ENOENT) like the walk would.
        """
        if not self.usable or self._syscall is None:
            return None
        how = _OpenHow(os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC, 0,
                       _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
        fd = self._syscall(ctypes.c_long(_OPENAT2_NR), ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(rel)),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM, errno.E2BIG):  # no openat2 here (or a filter forbids it)
            self.usable = False
            return None
        if err in (errno.EAGAIN, errno.EINTR):  # a rename raced the lookup: the walk decides
            return None
        if err == errno.EXDEV:  # would leave the folder: only a symlink or a mount can do that here
            err = errno.ELOOP
        raise OSError(err, os.strerror(err), rel)


_OPENAT2 = _Openat2()


def _walk_dirs(real_root: str, parts: list[str], *, create: bool) -> int:
    """Open the directory ``real_root/parts…`` without following symlinks; return its fd."""
    try:
        fd = os.open(real_root, DIR_FLAGS)
    except FileNotFoundError:
        raise ToolError(f"the workspace folder {real_root} does not exist",
                        hint="ask the person to create it or to start the agent in another folder") from None
    try:
        if parts:
            try:
                whole = _OPENAT2.open_dir(fd, "/".join(parts))
            except FileNotFoundError:
                if not create:
                    raise
                whole = None  # the walk below makes what is missing
            if whole is not None:
                os.close(fd)
                return whole
        for part in parts:
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: open it
                    os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_folder(real_root: str, parts: list[str], shown: str, *, create: bool, whole: bool = False) -> int:
    """:func:`_walk_dirs` with its failures turned into messages; ``whole``: ``shown`` names this folder."""
    try:
        return _walk_dirs(real_root, parts, create=create)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            # O_DIRECTORY|O_NOFOLLOW answers ENOTDIR both for a file and for a symlink: tell them apart
            blocker = _first_non_dir(real_root, parts)
            if blocker is None or blocker[1]:
                raise _through_link(shown) from None
            if whole and blocker[0] == "/".join(parts):
                raise ToolError(f"{shown!r} is a file, not a folder", hint="read_file shows its content") from None
            raise ToolError(f"{blocker[0]!r} is a file, not a folder, so {shown!r} cannot exist",
                            hint="check the path with list_files") from None
        if isinstance(exc, FileNotFoundError):
            raise ToolError(f"the folder of {shown!r} does not exist",
                            hint="list_files shows what exists") from None
        raise


def _first_non_dir(real_root: str, parts: list[str]) -> tuple[str, bool] | None:
    """The first component that is not a folder, and whether it is a symlink (for messages only)."""
    here = real_root
    for i, part in enumerate(parts):
        here = os.path.join(here, part)
        try:
            st = os.lstat(here)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return "/".join(parts[: i + 1]), True
        if not stat.S_ISDIR(st.st_mode):
            return "/".join(parts[: i + 1]), False
    return None


@contextlib.contextmanager
def confined_dir(root: str | os.PathLike[str], path: str | os.PathLike[str] = ".") -> Iterator[int]:
    """A descriptor of the folder ``path`` (relative to ``root``), opened without following symlinks.

    Use it with ``os.scandir(fd)`` and ``dir_fd=fd`` calls; it is closed when the block ends.
    """
    shown = os.fspath(path)
    real_root, parts = _parts(root, path)
    _check_names(parts, shown or ".", write=False)
    fd = _open_folder(real_root, parts, shown or ".", create=False, whole=True)
    try:
        yield fd
    finally:
        os.close(fd)


def _refuse_protected_file(st: os.stat_result, real_root: str, shown: str) -> None:
    """Refuse a file that *is* one of the workspace's protected files under another name (a hard link)."""
    for name in PROTECTED:
        try:
            known = os.stat(os.path.join(real_root, name), follow_symlinks=False)
        except OSError:
            continue
        if (known.st_dev, known.st_ino) == (st.st_dev, st.st_ino):
            raise _protected_error(shown, name)


def _check_regular(fd: int, shown: str) -> os.stat_result:
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{shown!r} is a folder, not a file", hint="list_files shows its contents")
    if not stat.S_ISREG(st.st_mode):
        raise ToolError(f"{shown!r} is not a regular file (a device, pipe or socket)",
                        hint="the file tools work on regular files only")
    return st


def open_confined(root: str | os.PathLike[str], path: str | os.PathLike[str], mode: str = "r",
                  *, encoding: str | None = "utf-8", newline: str | None = None,
                  create_parents: bool = False) -> IO[Any]:
    """Open ``path`` (relative to ``root``) for ``mode`` ('r', 'rb', 'w', 'wb', 'a', 'x'…) safely.

    Each component of the resolved path is opened with ``O_NOFOLLOW`` relative to its parent, so
    the file opened is the one that was checked even if a symlink is swapped in meanwhile. Only
    regular files are opened: a folder, device or pipe is refused with a message.
    """
    shown = os.fspath(path)
    real_root, parts = _parts(root, path)
    if not parts:
        raise ToolError(f"{shown!r} is the workspace folder, not a file", hint="name a file inside it")
    _check_names(parts, shown, write=not ("r" in mode and "+" not in mode))
    binary = "b" in mode
    if "r" in mode and "+" not in mode:
        flags = os.O_RDONLY
    elif "a" in mode:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    elif "x" in mode:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    elif "w" in mode:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    else:
        flags = os.O_RDWR
    # O_NONBLOCK: opening a FIFO must not hang before it can be refused; cleared again below
    flags |= os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
    dir_fd = _open_folder(real_root, parts[:-1], shown, create=create_parents)
    try:
        fd = os.open(parts[-1], flags, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _through_link(shown) from None
        if isinstance(exc, FileNotFoundError):
            raise ToolError(f"{shown!r} does not exist", hint="list_files shows what exists") from None
        if isinstance(exc, FileExistsError):
            raise ToolError(f"{shown!r} already exists", hint="pick another name, or overwrite it on purpose") from None
        if isinstance(exc, IsADirectoryError):
            raise ToolError(f"{shown!r} is a folder, not a file", hint="list_files shows its contents") from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing
            raise ToolError(f"{shown!r} is not a regular file (a pipe)",
                            hint="the file tools work on regular files only") from None
        raise
    finally:
        os.close(dir_fd)
    try:
        _refuse_protected_file(_check_regular(fd, shown), real_root, shown)
        os.set_blocking(fd, True)
        fmode = mode if binary else mode.replace("t", "")
        return os.fdopen(fd, fmode, encoding=None if binary else encoding, newline=None if binary else newline)
    except BaseException:
        os.close(fd)
        raise


def write_atomic(root: str | os.PathLike[str], path: str | os.PathLike[str], data: bytes,
                 *, create_parents: bool = True) -> bool:
    """Replace the content of ``path`` with ``data`` atomically; returns True when the file is new.

    The data goes to a temporary file in the same folder (opened through the confined folder
    descriptor), is flushed to disk, then renamed over the target: a reader sees the old or the
    new content, never a half-written file. An existing file keeps its permission bits. A
    symlink inside the workspace that points inside is written through (its target is replaced).
    """
    shown = os.fspath(path)
    real_root, parts = _parts(root, path)
    if not parts:
        raise ToolError(f"{shown!r} is the workspace folder, not a file", hint="name a file inside it")
    _check_names(parts, shown, write=True)
    name = parts[-1]
    dir_fd = _open_folder(real_root, parts[:-1], shown, create=create_parents)
    try:
        try:
            old = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None:
            if stat.S_ISLNK(old.st_mode):
                raise _through_link(shown)  # resolved away above, so it was swapped in meanwhile
            if stat.S_ISDIR(old.st_mode):
                raise ToolError(f"{shown!r} is a folder, not a file", hint="write to a file inside it")
            if not stat.S_ISREG(old.st_mode):
                raise ToolError(f"{shown!r} is not a regular file (a device, pipe or socket)",
                                hint="the file tools work on regular files only")
            _refuse_protected_file(old, real_root, shown)
        tmp, fd = _create_temp(dir_fd, name)
        try:
            try:
                if old is not None:
                    os.fchmod(fd, stat.S_IMODE(old.st_mode))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        with contextlib.suppress(OSError):  # durability of the rename; not every filesystem allows it
            os.fsync(dir_fd)
        return old is None
    finally:
        os.close(dir_fd)


def _create_temp(dir_fd: int, name: str) -> tuple[str, int]:
    """Create an empty temporary file beside ``name``; return its name and a descriptor open for writing."""
    for _ in range(100):
        tmp = f".{name[:200]}.{os.urandom(4).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            continue
        return tmp, fd
    raise ToolError(f"could not create a temporary file beside {name!r}", hint="try again")
