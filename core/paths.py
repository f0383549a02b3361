"""Workspace path confinement for the tools that touch files.

A path from the model is relative to the workspace root. Refused: absolute paths, paths whose
``..`` leads outside, and symlinks (anywhere along the path) whose target lies outside. The check
is made on the resolved real path at the moment of use, and :func:`open_confined` then opens that
resolved path one component at a time with ``O_NOFOLLOW``, so a symlink swapped in between the
check and the open makes the open fail instead of escaping.

Covered: the file tools (read, write, edit, list, search). Not covered here: code run by the
shell and Python tools, which the operating-system sandbox confines (``core/sandbox.py``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO, Any

from core.errors import ToolError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class PathEscape(ToolError):
    """A path leads outside the workspace."""


def _outside(path: str) -> PathEscape:
    return PathEscape(
        f"{path!r} is outside the workspace",
        hint="use a path relative to the workspace root, without '..' leading out of it",
    )


def resolve_in_workspace(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """The real path of ``path`` inside ``root``; raises :class:`PathEscape` when it leads out.

    The target need not exist (for writes); its existing ancestors are resolved through symlinks.
    """
    text = os.fspath(path)
    if "\x00" in text:
        raise ToolError("the path contains a NUL byte", hint="pass a plain relative path")
    if text.startswith("~"):
        raise _outside(text)
    if os.path.isabs(text):
        raise _outside(text)
    real_root = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(real_root / (text or ".")))
    if candidate != real_root and real_root not in candidate.parents:
        raise _outside(text)
    return candidate


def relative_to_workspace(root: str | os.PathLike[str], real: Path) -> str:
    """How to name ``real`` to the model: relative to the workspace, ``.`` for the root."""
    rel = os.path.relpath(real, os.path.realpath(root))
    return "." if rel == "." else rel.replace(os.sep, "/")


def _walk_dirs(real_root: str, parts: list[str], *, create: bool) -> int:
    """Open the directory ``real_root/parts…`` without following symlinks; return its fd."""
    fd = os.open(real_root, _DIR_FLAGS)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_confined(root: str | os.PathLike[str], path: str | os.PathLike[str], mode: str = "r",
                  *, encoding: str | None = "utf-8", newline: str | None = None,
                  create_parents: bool = False) -> IO[Any]:
    """Open ``path`` (relative to ``root``) for ``mode`` ('r', 'rb', 'w', 'wb', 'a', 'x'…) safely.

    Each component of the resolved path is opened with ``O_NOFOLLOW`` relative to its parent, so
    the file opened is the one that was checked even if a symlink is swapped in meanwhile.
    """
    real = resolve_in_workspace(root, path)
    real_root = os.path.realpath(root)
    rel = os.path.relpath(real, real_root)
    if rel == ".":
        raise ToolError(f"{os.fspath(path)!r} is the workspace folder, not a file", hint="name a file inside it")
    parts = rel.split(os.sep)
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
    flags |= os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        dir_fd = _walk_dirs(real_root, parts[:-1], create=create_parents)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _outside(os.fspath(path)) from None
        if isinstance(exc, FileNotFoundError):
            raise ToolError(f"folder of {os.fspath(path)!r} does not exist",
                            hint="create it first, or list_files to see what exists") from None
        raise
    try:
        fd = os.open(parts[-1], flags, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _outside(os.fspath(path)) from None
        if isinstance(exc, FileNotFoundError):
            raise ToolError(f"{os.fspath(path)!r} does not exist", hint="list_files shows what exists") from None
        if isinstance(exc, IsADirectoryError):
            raise ToolError(f"{os.fspath(path)!r} is a folder, not a file", hint="list_files shows its contents") from None
        raise
    finally:
        os.close(dir_fd)
    fmode = mode if binary else mode.replace("t", "")
    return os.fdopen(fd, fmode, encoding=None if binary else encoding, newline=None if binary else newline)
