"""Finding files and text in the workspace: the confined walk, glob patterns, and the regex search.

The walk opens every folder through a descriptor with ``O_NOFOLLOW`` relative to its parent, so
it never leaves the workspace, never follows a symlink, and visits entries depth-first in name
order (the order ripgrep's ``--sort path`` uses). The search runs ripgrep when it is on ``PATH``
and Python's ``re`` otherwise; both give the same matches in the same order, so the model never
sees which one ran. Patterns use Python ``re`` syntax: a pattern ripgrep cannot parse (a
lookaround, a backreference) is searched by the Python backend instead.

ripgrep walks by path names, so it runs **inside the sandbox** (``core.sandbox``): the workspace
read-only, ``.env`` and ``.agent`` covered, nothing else of the machine visible, no network. A
folder swapped for a symlink during a search then leads nowhere the sandbox does not show.
Where the sandbox cannot start (no bwrap, ``AGENT_SANDBOX=off``), the Python backend answers: it
reads through descriptors and cannot be led out at all.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import stat
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from core import sandbox
from core.errors import ConfigError, SandboxError, ToolError
from core.paths import (DIR_FLAGS, PROTECTED, PathEscape, confined_dir, refuse_protected, relative_to_workspace,
                        resolve_in_workspace)

#: folders neither listed into nor searched: version control, the agent's own state, caches
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".agent", "__pycache__", ".venv", "node_modules",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox"})
#: larger files are not searched (both backends)
MAX_SEARCH_FILE_BYTES = 2 * 1024 * 1024
#: a matching line is shown up to this many characters, around the match
LINE_CHARS = 200

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
#: where the ripgrep binary is bound inside the sandbox
RG_IN_SANDBOX = "/run/agent/rg"


# --- the walk --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One thing found in a folder."""

    path: str  # relative to the workspace root, '/'-separated
    rel: str  # relative to the folder the walk started in
    name: str
    kind: str  # "dir" | "file" | "link" | "other"
    size: int
    depth: int  # 1: directly in the start folder
    target: str = ""  # where a symlink points (never followed)
    skipped: bool = False  # a folder in SKIP_DIRS: reported, not entered


def walk(root: Path, start: str, *, max_depth: int | None = None,
         skip: frozenset[str] = SKIP_DIRS) -> Iterator[tuple[int, Entry]]:
    """Each entry below ``start`` with the descriptor of its folder, depth-first in name order.

    The descriptor is valid until the next item is asked for; use it with ``dir_fd=``.
    """
    rel = relative_to_workspace(root, resolve_in_workspace(root, start))
    prefix = "" if rel == "." else rel + "/"
    with confined_dir(root, start) as fd:
        yield from _walk_fd(fd, prefix, "", 1, max_depth, skip)


def _walk_fd(fd: int, prefix: str, rel_prefix: str, depth: int, max_depth: int | None,
             skip: frozenset[str]) -> Iterator[tuple[int, Entry]]:
    try:
        entries = _scan(fd, prefix, rel_prefix, depth, skip)
    except OSError:
        return  # unreadable folder (permissions, removed meanwhile): nothing to show from it
    for entry in entries:
        yield fd, entry
        if entry.kind != "dir" or entry.skipped or (max_depth is not None and depth >= max_depth):
            continue
        try:
            child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue  # swapped for a symlink or removed since the scan: not entered
        try:
            yield from _walk_fd(child, entry.path + "/", entry.rel + "/", depth + 1, max_depth, skip)
        finally:
            os.close(child)


def _scan(fd: int, prefix: str, rel_prefix: str, depth: int, skip: frozenset[str]) -> list[Entry]:
    found = []
    with os.scandir(fd) as it:
        for item in it:
            name = item.name
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            target = ""
            if stat.S_ISDIR(st.st_mode):
                kind = "dir"
            elif stat.S_ISREG(st.st_mode):
                kind = "file"
            elif stat.S_ISLNK(st.st_mode):
                kind = "link"
                with contextlib.suppress(OSError):
                    target = os.readlink(name, dir_fd=fd)
            else:
                kind = "other"
            found.append(Entry(prefix + name, rel_prefix + name, name, kind, st.st_size if kind == "file" else 0,
                               depth, target, kind == "dir" and name in skip))
    found.sort(key=lambda e: e.name)
    return found


# --- glob patterns ---------------------------------------------------------------------------

def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A test for paths relative to the search folder, with ripgrep's (gitignore) glob rules.

    Without a '/', the pattern matches the file name at any depth (``*.py``); with one, it
    matches the whole relative path (``src/*.py``: ``*`` stops at '/', ``**`` crosses folders).
    ``?``, ``[abc]``, ``[!abc]`` and ``{py,md}`` work as usual.
    """
    text = pattern.strip()
    if text.startswith("./"):
        text = text[2:]
    text = text.lstrip("/") if "/" in text.rstrip("/") else text
    text = text.rstrip("/") or "*"
    if not text:
        raise ToolError("the glob is empty", hint="leave it out, or give a pattern such as '*.py'")
    regex = re.compile(_glob_regex(text, pattern) + r"\Z", re.DOTALL)
    if "/" in text:
        return lambda rel: regex.match(rel) is not None
    return lambda rel: regex.match(rel.rsplit("/", 1)[-1]) is not None


def _glob_regex(pat: str, original: str) -> str:
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            seg_start = i == 0 or pat[i - 1] == "/"
            if pat.startswith("**", i) and seg_start and (i + 2 == n or pat[i + 2] == "/"):
                if i + 2 == n:
                    out.append(".*")
                    i += 2
                else:
                    out.append("(?:[^/]*/)*")
                    i += 3
                continue
            while i < n and pat[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pat[j] in "!^":
                j += 1
            if j < n and pat[j] == "]":
                j += 1
            j = pat.find("]", j)
            if j < 0:
                raise ToolError(f"the glob {original!r} has a '[' without its ']'",
                                hint="close it, or write \\[ for a literal [")
            body = pat[i + 1:j]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("^", "\\^")
            out.append(f"[{'^/' if negate else ''}{body}]")
            i = j
        elif c == "{":
            j, level, alts, cur = i + 1, 1, [], []
            while j < n:
                if pat[j] == "{":
                    level += 1
                elif pat[j] == "}":
                    level -= 1
                    if level == 0:
                        break
                elif pat[j] == "," and level == 1:
                    alts.append("".join(cur))
                    cur = []
                    j += 1
                    continue
                cur.append(pat[j])
                j += 1
            if j >= n:
                raise ToolError(f"the glob {original!r} has a '{{' without its '}}'", hint="close it, e.g. '*.{py,md}'")
            alts.append("".join(cur))
            out.append("(?:" + "|".join(_glob_regex(a, original) for a in alts) + ")")
            i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pat[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


# --- the regex search ------------------------------------------------------------------------

@dataclass(frozen=True)
class Match:
    path: str  # relative to the workspace root
    line: int  # 1-based
    text: str  # the line, shortened around the match when long


@dataclass(frozen=True)
class SearchResult:
    matches: list[Match]
    more: bool  # stopped at the cap with further matches left
    backend: str  # "ripgrep" | "python"
    files_skipped: int = 0  # binary or too large (Python backend only: ripgrep does not say)
    stopped_early: bool = False  # the time limit ended it


def compile_pattern(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """The pattern as Python ``re``; a bad one becomes a :class:`ToolError` saying where."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except FutureWarning:
        raise ToolError(f"the pattern {pattern!r} uses '[[' (a POSIX class such as [[:alpha:]]?), "
                        "which Python regular expressions do not support",
                        hint="write the class out, e.g. [A-Za-z] or \\w") from None
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ToolError(f"the pattern {pattern!r} is not a valid regular expression: {exc.msg}{where}",
                        hint="use Python re syntax; escape special characters such as ( [ . * + ? with a backslash "
                             "to match them literally") from None


def search(root: Path, pattern: str, *, path: str = ".", glob: str | None = None, ignore_case: bool = False,
           max_results: int = 100, rg: str | None = "auto", time_limit_s: float = 30.0,
           confined: bool = True) -> SearchResult:
    """Lines matching ``pattern`` in the files below ``path`` (or in the file ``path``).

    ``rg``: ``"auto"`` finds ripgrep on PATH, a path uses that binary, ``None`` forces Python.
    ripgrep runs only in the sandbox; ``confined=False`` (``AGENT_SANDBOX=off``) means Python.
    """
    regex = compile_pattern(pattern, ignore_case)
    matcher = compile_glob(glob) if glob else None
    real = refuse_protected(root, path)
    if not real.exists():
        raise ToolError(f"{path!r} does not exist", hint="list_files shows what exists")
    if not real.is_dir() and not real.is_file():
        raise ToolError(f"{path!r} is not a regular file (a device, pipe or socket)",
                        hint="search a folder or a regular file")
    binary = (find_rg() if rg == "auto" else rg) if confined else None
    if binary:
        found = _search_rg(binary, root, real, pattern, ignore_case, matcher, glob, regex, max_results, time_limit_s)
        if found is not None:
            return found
    return _search_python(root, real, regex, matcher, max_results, time_limit_s)


def find_rg() -> str | None:
    """ripgrep from PATH, else the one beside the agent's interpreter (the PyPI ``ripgrep`` package)."""
    found = shutil.which("rg")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "rg")
    return beside if os.path.isfile(beside) and os.access(beside, os.X_OK) else None


def _shorten(line: str, start: int) -> str:
    line = line.rstrip()
    if len(line) <= LINE_CHARS:
        return line
    begin = max(0, min(start - LINE_CHARS // 4, len(line) - LINE_CHARS))
    head = "…" if begin else ""
    tail = "…" if begin + LINE_CHARS < len(line) else ""
    return head + line[begin:begin + LINE_CHARS] + tail


def _search_python(root: Path, real: Path, regex: re.Pattern[str], matcher: Callable[[str], bool] | None,
                   max_results: int, time_limit_s: float) -> SearchResult:
    deadline = time.monotonic() + time_limit_s
    matches: list[Match] = []
    skipped = 0
    rel_real = relative_to_workspace(root, real)
    is_dir = real.is_dir()
    items = walk(root, rel_real) if is_dir else _single_file(root, rel_real)
    for dir_fd, entry in items:
        if entry.kind != "file" or entry.name in PROTECTED or (matcher is not None and is_dir
                                                                and not matcher(entry.rel)):
            continue
        if time.monotonic() > deadline:
            return SearchResult(matches, False, "python", skipped, stopped_early=True)
        if entry.size > MAX_SEARCH_FILE_BYTES:
            skipped += 1
            continue
        data = _read_file_at(dir_fd, entry.name)
        if data is None or b"\0" in data:
            skipped += data is not None
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
            line = line[:-1] if line.endswith("\r") else line
            hit = regex.search(line)
            if hit is None:
                continue
            if len(matches) == max_results:
                return SearchResult(matches, True, "python", skipped)
            matches.append(Match(entry.path, number, _shorten(line, hit.start())))
    return SearchResult(matches, False, "python", skipped)


def _single_file(root: Path, rel: str) -> Iterator[tuple[int, Entry]]:
    parent, _, name = rel.rpartition("/")
    with confined_dir(root, parent or ".") as fd:
        for entry in _scan(fd, parent + "/" if parent else "", "", 1, frozenset()):
            if entry.name == name:
                yield fd, entry


def _read_file_at(dir_fd: int, name: str) -> bytes | None:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None  # swapped for a symlink, removed, or unreadable since the scan
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= MAX_SEARCH_FILE_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _search_rg(binary: str, root: Path, real: Path, pattern: str, ignore_case: bool,
               matcher: Callable[[str], bool] | None, glob: str | None, regex: re.Pattern[str],
               max_results: int, time_limit_s: float) -> SearchResult | None:
    """ripgrep's matches, or None when it cannot take this pattern (the Python backend will)."""
    rel_real = relative_to_workspace(root, real)
    is_dir = real.is_dir()
    folder, _, name = (rel_real, "", "") if is_dir else rel_real.rpartition("/")
    folder = folder or "."
    prefix = "" if folder == "." else folder + "/"
    args = [binary, "--json", "--no-config", "--hidden", "--no-ignore", "--crlf", "--sort", "path",
            "--max-filesize", str(MAX_SEARCH_FILE_BYTES)]
    if ignore_case:
        args.append("--ignore-case")
    if is_dir:
        if glob:
            args += ["--glob", glob]
        for skipped in sorted(SKIP_DIRS | set(PROTECTED)):
            args += ["--glob", f"!{skipped}"]
    args += ["--regexp", pattern, "--", "./" + (name if not is_dir else "")]
    matches: list[Match] = []
    more = False
    checked: dict[str, bool] = {}
    if not os.access(binary, os.X_OK):
        return None  # not a program after all: the Python backend answers
    with confined_dir(root, folder):  # refuses a protected or linked folder with the usual message
        pass
    real_root = Path(os.path.realpath(root))
    policy = sandbox.SandboxPolicy(
        workspace=real_root, readonly_workspace=True, python=False, network=False,
        hidden=tuple(real_root / name for name in PROTECTED), state_dir=real_root / ".agent",
        readonly_binds=((os.path.realpath(binary), RG_IN_SANDBOX),), timeout_s=time_limit_s + 30,
        limits=sandbox.Limits(cpu_s=None), output_bytes=64 * 1024)  # the time limit below is wall time
    try:
        proc = sandbox.start([RG_IN_SANDBOX, *args[1:]], policy, cwd=folder)
    except (SandboxError, ConfigError, PathEscape, ToolError):
        return None  # no sandbox here (or the folder is gone, or it is refused): the Python backend answers
    # a search that runs long is ended by killing ripgrep; what it found so far is kept
    timer = threading.Timer(time_limit_s, proc.stop)
    timer.start()
    # stderr is drained meanwhile (keeping its start, for pattern errors): ripgrep blocks on a
    # full pipe, and a tree full of unreadable folders writes a line for each
    errors = bytearray()
    drain = threading.Thread(target=_drain, args=(proc.stderr, errors), daemon=True)
    drain.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                break  # a line cut short when the time limit killed ripgrep
            if event.get("type") != "match":
                continue
            data = event["data"]
            rel = _rg_text(data["path"])
            rel = rel[2:] if rel.startswith("./") else rel
            if matcher is not None and is_dir and not matcher(rel):
                continue
            wpath = prefix + rel
            if wpath.rpartition("/")[2] in PROTECTED:
                continue  # the globs above keep it out; this holds even for a ripgrep that ignores them
            if wpath not in checked:
                checked[wpath] = _still_inside(root, wpath)
            if not checked[wpath]:
                continue
            line = _rg_text(data["lines"]).rstrip("\n")
            line = line[:-1] if line.endswith("\r") else line
            # ripgrep gives byte offsets; shorten around the match as the Python backend does
            hit = regex.search(line)
            if len(matches) == max_results:
                more = True
                break
            matches.append(Match(wpath, int(data["line_number"]), _shorten(line, hit.start() if hit else 0)))
    finally:
        timer.cancel()
        if proc.alive:
            proc.stop()
        code = proc.wait(30.0)
        drain.join()
        proc.kill()
    err = bytes(errors)
    stopped = not more and code == -9
    if not matches and code not in (0, 1) and (b"bwrap: execvp" in err or _is_pattern_error(err)):
        return None  # it could not start in the sandbox, or cannot take this pattern: Python answers
        return None
    return SearchResult(matches, more, "ripgrep", stopped_early=stopped)


def _drain(stream: IO[bytes] | None, keep: bytearray, limit: int = 64 * 1024) -> None:
    """Read ``stream`` to its end, keeping its first ``limit`` bytes in ``keep``."""
    if stream is None:
        return
    with stream:
        for chunk in iter(lambda: stream.read(65536), b""):
            if len(keep) < limit:
                keep += chunk[: limit - len(keep)]


def _rg_text(obj: dict[str, str]) -> str:
    if "text" in obj:
        return obj["text"]
    return base64.b64decode(obj.get("bytes", "")).decode("utf-8", "replace")


def _is_pattern_error(stderr: bytes) -> bool:
    text = stderr.decode("utf-8", "replace").lower()
    return "regex parse error" in text or "error parsing" in text or "look-around" in text \
        or "backreferences" in text


def _still_inside(root: Path, wpath: str) -> bool:
    """Whether ``wpath`` still names a file inside the workspace without going through a symlink."""
    try:
        real = resolve_in_workspace(root, wpath)
    except PathEscape:
        return False
    return str(real) == os.path.join(os.path.realpath(root), *wpath.split("/"))


def format_matches(matches: Sequence[Match]) -> str:
    return "\n".join(f"{m.path}:{m.line}: {m.text}" for m in matches)
