"""Workspace path confinement for the tools that touch files.

A path from the model is relative to the workspace root. Refused: absolute paths, ``~``, paths
whose ``..`` leads outside, and symlinks (anywhere along the path) whose target lies outside. The
check is made on the resolved real path at the moment of use, and the functions here then walk
that resolved path one component at a time with ``O_NOFOLLOW``, each component opened relative
to its parent's file descriptor, so a symlink swapped in between the check and the use makes the
call fail instead of escaping:

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
import errno
import os
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


def refuse_protected(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """The real path of ``path`` in ``root``; raises :class:`ProtectedPath` for a protected name."""
    real = resolve_in_workspace(root, path)
    part = protected_part(real, root)
    if part is not None:
        what = ("the secrets and settings file (API keys, AGENT_SANDBOX)" if part == ".env"
                else "the agent's own state (sessions, memories)")
        raise ProtectedPath(f"{os.fspath(path)!r} is {part if part == '.env' else 'inside ' + part + '/'}, {what}; "
                            "the file tools do not read or write it",
                            hint="ask the person to change it themselves if it must change")
    return real


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


def _walk_dirs(real_root: str, parts: list[str], *, create: bool) -> int:
    """Open the directory ``real_root/parts…`` without following symlinks; return its fd."""
    try:
        fd = os.open(real_root, DIR_FLAGS)
    except FileNotFoundError:
        raise ToolError(f"the workspace folder {real_root} does not exist",
                        hint="ask the person to create it or to start the agent in another folder") from None
    try:
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
    fd = _open_folder(real_root, parts, shown or ".", create=False, whole=True)
    try:
        yield fd
    finally:
        os.close(fd)


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
        _check_regular(fd, shown)
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
