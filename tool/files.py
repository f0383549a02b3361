"""The file tools the model uses on the workspace: list, read, write, edit, search.

Every access goes through ``core.paths`` (resolved real path checked at use time, folders walked
with ``O_NOFOLLOW`` descriptors), so no path, symlink or swap leads outside the workspace.
Expected failures raise :class:`ToolError` with a hint; the loop hands them to the model.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
from pathlib import Path
from typing import BinaryIO

from core.errors import ToolError
from core.paths import (DIR_FLAGS, open_confined, refuse_protected, relative_to_workspace, resolve_in_workspace,
                        write_atomic)
from core.tools import Tool, ToolResult, object_schema
from tool.search import Entry, compile_glob, format_matches, search, walk

#: the agent's own state (sessions, memories): never written by a tool
STATE_DIR = ".agent"
_BINARY_MAGIC = (
    (b"\x89PNG", "PNG image"), (b"\xff\xd8\xff", "JPEG image"), (b"GIF8", "GIF image"),
    (b"%PDF", "PDF document"), (b"PK\x03\x04", "zip archive (also .docx, .xlsx, .jar, .whl)"),
    (b"\x1f\x8b", "gzip archive"), (b"\x7fELF", "executable (ELF)"), (b"SQLite format 3\0", "SQLite database"),
    (b"PAR1", "Parquet file"), (b"\x93NUMPY", "NumPy array"), (b"GGUF", "GGUF model"),
)
_LINE_NUMBER = re.compile(r"^\s*\d+\| ?")


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1024  # type: ignore[assignment]
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def binary_kind(head: bytes) -> str | None:
    """What kind of binary file starts with ``head`` (None: text, UTF-16 with a BOM included)."""
    for magic, kind in _BINARY_MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None
    return "binary data" if b"\0" in head else None


class FileTools:
    """The five file tools bound to one workspace root; limits are per instance."""

    def __init__(self, root: Path, *, max_read_chars: int = 6000, max_entries: int = 200,
                 scan_limit: int = 5000, max_edit_bytes: int = 8 * 1024 * 1024,
                 max_read_bytes: int = 16 * 1024 * 1024, rg: str | None = "auto",
                 search_time_s: float = 30.0) -> None:
        self.root = Path(root)
        self.max_read_chars = max_read_chars
        self.max_entries = max_entries
        self.scan_limit = scan_limit
        self.max_edit_bytes = max_edit_bytes
        self.max_read_bytes = max_read_bytes
        self.rg = rg  # "auto": ripgrep when on PATH; None: always Python
        self.search_time_s = search_time_s
        #: files read or written by these tools: workspace-relative name -> (mtime_ns, size) then
        self._seen: dict[str, tuple[int, int]] = {}

    def _rel(self, path: str) -> str:
        return relative_to_workspace(self.root, resolve_in_workspace(self.root, path))

    def _allowed(self, path: str) -> str:
        """The workspace-relative name of ``path``; protected names (``.env``, ``.agent/``) are refused."""
        return relative_to_workspace(self.root, refuse_protected(self.root, path))

    _writable = _allowed

    # --- read before write --------------------------------------------------------------------
    # As in Claude Code's file tools: a file is changed only after it was read in this session,
    # and only as it was read. A model that writes a file it never looked at replaces what the
    # person had with what it imagined (a config.json rebuilt from its name).

    def _snapshot(self, path: str) -> tuple[int, int] | None:
        """``(mtime_ns, size)`` of an existing file, ``None`` when there is none."""
        try:
            with open_confined(self.root, path, "rb") as f:
                st = os.fstat(f.fileno())
        except ToolError:
            return None
        return st.st_mtime_ns, st.st_size

    def _remember(self, rel: str, path: str) -> None:
        snap = self._snapshot(path)
        if snap is not None:
            self._seen[rel] = snap

    def _check_read(self, rel: str, path: str, tool: str) -> None:
        """Refuse to change an existing file that was not read, or that changed since it was read."""
        now = self._snapshot(path)
        if now is None:
            return  # a new file: nothing to lose
        seen = self._seen.get(rel)
        if seen is None:
            raise ToolError(f"{rel} exists and has not been read in this session, so {tool} will not change it",
                            hint=f"call read_file on {rel} first, then edit_file the part to change "
                                 "(or write_file the complete new content)")
        if seen != now:
            raise ToolError(f"{rel} has changed since you last read it (by a command or another tool)",
                            hint=f"call read_file on {rel} again, then make your change to what it holds now")

    # --- list_files ---------------------------------------------------------------------------

    def list_files(self, path: str = ".", recursive: bool | None = None, max_depth: int | None = None,
                   glob: str | None = None) -> ToolResult:
        rel = self._rel(path)
        real = resolve_in_workspace(self.root, path)
        if not real.exists():
            raise ToolError(f"{path!r} does not exist", hint="list_files with no path shows the workspace root")
        if not real.is_dir():
            size = human_size(real.stat().st_size)
            return ToolResult(f"{rel}  {size}  (a file; read_file shows its content)",
                              summary=f"{rel} is a file ({size})")
        deep = recursive if recursive is not None else bool(glob) or max_depth is not None
        # a glob asks "where are the *.py files": look deep unless told otherwise
        depth = (max_depth or (10 if glob else 3)) if deep else 1
        matcher = compile_glob(glob) if glob else None
        found: list[tuple[Entry, int]] = []  # the entry and, for a folder not entered, its entry count
        skipped: list[str] = []
        scanned = 0
        unentered = 0  # folders at the depth limit that hold something
        for dir_fd, entry in walk(self.root, rel, max_depth=depth):
            scanned += 1
            if scanned > self.scan_limit:
                break
            if entry.skipped:
                skipped.append(entry.path + "/")
                continue
            count = _count_entries(dir_fd, entry.name) if entry.kind == "dir" and entry.depth >= depth else -1
            unentered += count > 0
            if matcher is not None and not matcher(entry.rel):
                continue
            found.append((entry, count))
        shown = found
        if len(found) > self.max_entries:
            # keep the shallowest entries (the overview), in walk order
            keep = set(sorted(range(len(found)), key=lambda i: (found[i][0].depth, i))[: self.max_entries])
            shown = [item for i, item in enumerate(found) if i in keep]
        lines = [_entry_line(e, count) for e, count in shown]
        where = "the workspace" if rel == "." else rel
        if not lines:
            lines.append(f"(no entries in {where} match {glob!r})" if glob else f"({where} is empty)")
        if scanned > self.scan_limit:
            lines.append(f"[stopped after {self.scan_limit} entries; list a subfolder or add a glob to see the rest]")
        elif len(shown) < len(found):
            lines.append(f"[{len(shown)} of {len(found)} entries shown (the shallowest); list a subfolder, "
                         f"lower max_depth or add a glob to see the rest]")
        if glob and unentered and deep:
            lines.append(f"[{unentered} folder{'s' if unentered > 1 else ''} deeper than max_depth={depth} "
                         "not searched; raise max_depth to look inside]")
        if skipped:
            more = f" and {len(skipped) - 6} more" if len(skipped) > 6 else ""
            lines.append(f"[not listed: {', '.join(skipped[:6])}{more}]")
        files = sum(1 for e, _ in shown if e.kind == "file")
        folders = sum(1 for e, _ in shown if e.kind == "dir")
        cut = " (cut)" if len(shown) < len(found) or scanned > self.scan_limit else ""
        return ToolResult("\n".join(lines), summary=f"listed {where}: {_count(folders, 'folder')}, "
                                                     f"{_count(files, 'file')}{cut}",
                          data={"path": rel, "entries": len(shown), "cut": bool(cut)})

    # --- read_file ----------------------------------------------------------------------------

    def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None,
                  line_numbers: bool = True) -> ToolResult:
        if start_line is not None and end_line is not None and end_line < start_line:
            raise ToolError(f"end_line {end_line} is before start_line {start_line}",
                            hint="give end_line >= start_line, or leave end_line out to read to the end")
        rel = self._allowed(path)
        with open_confined(self.root, path, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            head = f.read(8192)
            kind = binary_kind(head)
            if kind is not None:
                raise ToolError(f"{rel} is a binary file ({kind}, {human_size(size)}); read_file shows text only",
                                hint="inspect it with a tool made for that kind of file, if one is offered")
            if size > self.max_read_bytes:
                if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    raise ToolError(f"{rel} is UTF-16 text larger than {human_size(self.max_read_bytes)}, "
                                    "too large for read_file", hint="search_files finds lines in it")
                text_lines, total, lossy = _stream_lines(head, f, (start_line or 1), end_line, self.max_read_chars)
            else:
                text_lines, total, lossy = _all_lines(head + f.read())
        self._seen[rel] = (st.st_mtime_ns, st.st_size)
        first = start_line or 1
        if total == 0:
            return ToolResult(f"({rel} is empty)", summary=f"read {rel} (empty)", data={"path": rel, "lines": 0})
        if first > total:
            raise ToolError(f"start_line {first} is past the end of {rel}, which has {total} lines",
                            hint=f"use a start_line from 1 to {total}")
        last_wanted = min(end_line or total, total)
        width = len(str(last_wanted))
        out: list[str] = []
        used = 0
        last = first - 1
        long_line = ""
        window = text_lines if size > self.max_read_bytes else text_lines[first - 1:last_wanted]
        for number, line in enumerate(window, first):
            rendered = f"{number:>{width}}| {line}" if line_numbers else line
            if used + len(rendered) + 1 > self.max_read_chars:
                if not out:  # one line longer than the whole budget: show its beginning
                    out.append(rendered[: self.max_read_chars])
                    last = number
                    kept = self.max_read_chars - (len(rendered) - len(line))
                    long_line = (f"[line {number} is {len(line)} characters long; only its first "
                                 f"{kept} are shown; search_files finds text inside it]")
                break
            out.append(rendered)
            used += len(rendered) + 1
            last = number
        notes = []
        if lossy:
            notes.append("[the file is not valid UTF-8: undecodable bytes are shown as \ufffd]")
        if long_line:
            notes.append(long_line)
        whole = first == 1 and last == total
        if last < last_wanted:
            notes.append(f"[lines {first}-{last} of {total} shown; to read on, call read_file with "
                         f"start_line={last + 1}]")
        elif not whole:
            notes.append(f"[lines {first}-{last} of {total}]")
        summary = f"read {rel} ({total} lines)" if whole else f"read {rel} lines {first}-{last} of {total}"
        return ToolResult("\n".join(out + notes), summary=summary,
                          data={"path": rel, "lines": total, "first": first, "last": last})

    # --- write_file ---------------------------------------------------------------------------

    def write_file(self, path: str, content: str) -> ToolResult:
        rel = self._writable(path)
        self._check_read(rel, path, "write_file")
        data = _encode(content)
        created = write_atomic(self.root, path, data)
        self._remember(rel, path)
        lines = content.count("\n") + (1 if content and not content.endswith("\n") else 0)
        verb = "Created" if created else "Overwrote"
        return ToolResult(f"{verb} {rel} ({_count(lines, 'line')}, {_count(len(data), 'byte')}).",
                          summary=f"{verb.lower()} {rel} ({_count(lines, 'line')})",
                          data={"path": rel, "lines": lines, "bytes": len(data), "created": created})

    # --- edit_file ----------------------------------------------------------------------------

    def edit_file(self, path: str, old_text: str, new_text: str, replace_all: bool = False) -> ToolResult:
        rel = self._writable(path)
        if old_text == "":
            raise ToolError("old_text is empty",
                            hint="copy the exact lines to change into old_text; to create a file use write_file")
        if old_text == new_text:
            raise ToolError("old_text and new_text are the same, so nothing would change",
                            hint="put the changed text in new_text")
        with open_confined(self.root, path, "rb") as f:
            data = f.read(self.max_edit_bytes + 1)
        if len(data) > self.max_edit_bytes:
            raise ToolError(f"{rel} is larger than {human_size(self.max_edit_bytes)}, too large for edit_file",
                            hint="change it with a script if a shell or Python tool is offered")
        kind = binary_kind(data[:8192])
        if kind is not None:
            raise ToolError(f"{rel} is a binary file ({kind}); edit_file changes text files only")
        bom = data.startswith(codecs.BOM_UTF8)
        try:
            text = data[len(codecs.BOM_UTF8) if bom else 0:].decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ToolError(f"{rel} is not valid UTF-8 (byte 0x{data[exc.start]:02x} on line {line}), "
                            "so edit_file could damage it",
                            hint="to convert it, read_file it and write the whole text back with write_file") from None
        self._check_read(rel, path, "edit_file")
        crlf = "\r\n" in text and text.count("\r\n") == text.count("\n")
        work = text.replace("\r\n", "\n") if crlf else text
        old = old_text.replace("\r\n", "\n") if crlf else old_text
        new = new_text.replace("\r\n", "\n") if crlf else new_text
        starts = _occurrences(work, old)
        if not starts:
            raise _not_found(rel, work, old)
        if len(starts) > 1 and not replace_all:
            where = _and_list([str(work.count("\n", 0, s) + 1) for s in starts[:20]])
            more = f" (and {len(starts) - 20} more)" if len(starts) > 20 else ""
            raise ToolError(f"old_text occurs {len(starts)} times in {rel}, at lines {where}{more}",
                            hint="include more surrounding lines in old_text so it matches once, "
                                 "or set replace_all to true to change every occurrence")
        result = work.replace(old, new) if replace_all else work.replace(old, new, 1)
        body = result.replace("\n", "\r\n") if crlf else result
        write_atomic(self.root, path, (codecs.BOM_UTF8 if bom else b"") + _encode(body))
        self._remember(rel, path)
        # where the new text sits in the new file
        shift, new_starts = 0, []
        for s in starts:
            new_starts.append(s + shift)
            shift += len(new) - len(old)
        new_lines = [result.count("\n", 0, s) + 1 for s in new_starts]
        n = len(starts)
        head = f"Replaced {n} occurrence{'s' if n > 1 else ''} in {rel}"
        if n == 1:
            snippet = _snippet(result, new_lines[0], new.count("\n") + 1)
            content = f"{head}. The changed part now reads:\n{snippet}"
        else:
            content = f"{head}, now at lines {_and_list([str(x) for x in new_lines[:20]])}."
        return ToolResult(content, summary=f"edited {rel} ({n} replacement{'s' if n > 1 else ''})",
                          data={"path": rel, "replacements": n, "lines": new_lines})

    # --- search_files -------------------------------------------------------------------------

    def search_files(self, pattern: str, path: str = ".", glob: str | None = None, ignore_case: bool = False,
                     max_results: int = 50) -> ToolResult:
        found = search(self.root, pattern, path=path, glob=glob, ignore_case=ignore_case,
                       max_results=max_results, rg=self.rg, time_limit_s=self.search_time_s)
        where = self._rel(path)
        where = "the workspace" if where == "." else where
        files = len({m.path for m in found.matches})
        if not found.matches:
            tried = f" in files matching {glob!r}" if glob else ""
            text = f"No matches for {pattern!r} in {where}{tried}."
            if found.stopped_early:
                text += " [the search was stopped by its time limit; search a subfolder]"
            return ToolResult(text, summary=f"no matches for {pattern!r}",
                              data={"matches": 0, "backend": found.backend})
        lines = [format_matches(found.matches)]
        if found.more:
            lines.append(f"[first {len(found.matches)} matching lines shown, there are more; "
                         "narrow the pattern, add a glob or a path, or raise max_results]")
        elif found.stopped_early:
            lines.append("[the search was stopped by its time limit; search a subfolder to see everything]")
        plus = "+" if found.more or found.stopped_early else ""
        noun = "match" if len(found.matches) == 1 and not plus else "matches"
        return ToolResult("\n".join(lines), summary=f"{len(found.matches)}{plus} {noun} in {_count(files, 'file')}",
                          data={"matches": len(found.matches), "files": files, "more": found.more,
                                "backend": found.backend})

    # --- the Tool objects ---------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        rel_path = "relative to the workspace root"
        return [
            Tool("list_files",
                 "List a workspace folder: subfolders end with '/', files show their size. "
                 "Skips .git, .agent, __pycache__, .venv and similar folders.",
                 object_schema({
                     "path": {"type": "string", "description": f"Folder to list, {rel_path} (default '.')."},
                     "recursive": {"type": "boolean",
                                   "description": "Also list inside subfolders "
                                                  "(default false; true when glob is given)."},
                     "max_depth": {"type": "integer", "minimum": 1, "maximum": 10,
                                   "description": "Folder levels to descend when recursive (default 3)."},
                     "glob": {"type": "string",
                              "description": "Only entries matching this pattern: '*.py' matches names, "
                                             "'src/**/*.py' matches paths below the folder."},
                 }),
                 self.list_files, read_only=True),
            Tool("read_file",
                 "Read a text file, with line numbers ('12| text'; the numbers are not part of the file). "
                 "Long files come in parts: the note at the end says how to read on.",
                 object_schema({
                     "path": {"type": "string", "description": f"File to read, {rel_path}."},
                     "start_line": {"type": "integer", "minimum": 1, "description": "First line to read (default 1)."},
                     "end_line": {"type": "integer", "minimum": 1,
                                  "description": "Last line to read, included (default: the end)."},
                     "line_numbers": {"type": "boolean",
                                      "description": "Prefix each line with its number (default true)."},
                 }, ["path"]),
                 self.read_file, read_only=True),
            Tool("search_files",
                 "Search file contents with a regular expression (Python re syntax). "
                 "Returns 'path:line: text' for each matching line; skips binary files.",
                 object_schema({
                     "pattern": {"type": "string", "description": "Regular expression to find in each line."},
                     "path": {"type": "string", "description": f"Folder or file to search, {rel_path} (default '.')."},
                     "glob": {"type": "string",
                              "description": "Only files matching this pattern, e.g. '*.py' or 'src/**/*.ts'."},
                     "ignore_case": {"type": "boolean", "description": "Match regardless of case (default false)."},
                     "max_results": {"type": "integer", "minimum": 1, "maximum": 500,
                                     "description": "Most matching lines to return (default 50)."},
                 }, ["pattern"]),
                 self.search_files, read_only=True, timeout_s=60.0),
            Tool("write_file",
                 "Create a file, or replace the whole content of a file you have read; missing parent "
                 "folders are created. To change part of an existing file, use edit_file.",
                 object_schema({
                     "path": {"type": "string", "description": f"File to write, {rel_path}."},
                     "content": {"type": "string", "description": "The complete new content of the file."},
                 }, ["path", "content"]),
                 self.write_file),
            Tool("edit_file",
                 "Replace text in a file you have read. old_text must match the file exactly (indentation "
                 "included, no line numbers) and occur once, unless replace_all is true.",
                 object_schema({
                     "path": {"type": "string", "description": f"File to edit, {rel_path}."},
                     "old_text": {"type": "string",
                                  "description": "Exact text to replace; include enough lines to make it unique."},
                     "new_text": {"type": "string", "description": "Text to put in its place (may be empty)."},
                     "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)."},
                 }, ["path", "old_text", "new_text"]),
                 self.edit_file),
        ]


def file_tools(root: Path) -> list[Tool]:
    """The file tools for the workspace at ``root``: fresh objects on each call."""
    return FileTools(root).tools()


# --- helpers -------------------------------------------------------------------------------------

def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _entry_line(entry: Entry, count: int) -> str:
    if entry.kind == "dir":
        return f"{entry.path}/" + (f"  ({_count(count, 'entry', 'entries')})" if count >= 0 else "")
    if entry.kind == "file":
        return f"{entry.path}  {human_size(entry.size)}"
    if entry.kind == "link":
        return f"{entry.path} -> {entry.target}  (symlink, not followed)"
    return f"{entry.path}  (special file)"


def _count_entries(dir_fd: int, name: str) -> int:
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return -1
    try:
        return len(os.listdir(fd))
    except OSError:
        return -1
    finally:
        os.close(fd)


def _decode(data: bytes) -> tuple[str, bool]:
    """Text from file bytes and whether some bytes were not valid (shown as U+FFFD)."""
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(codec, "replace"), False
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), True


def _split(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start another
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _all_lines(data: bytes) -> tuple[list[str], int, bool]:
    text, lossy = _decode(data)
    lines = _split(text)
    return lines, len(lines), lossy


def _stream_lines(head: bytes, f: BinaryIO, first: int, last: int | None,
                  budget: int) -> tuple[list[str], int, bool]:
    """Lines ``first``… of a file too large to load (about ``budget`` characters of them) and its line count."""
    wanted: list[str] = []
    used, complete, lossy = 0, 0, False
    buf = head
    while True:
        chunk = f.read(1 << 20)
        buf += chunk
        parts = buf.split(b"\n")
        buf = parts.pop()
        if not chunk and buf:
            parts.append(buf)  # an unterminated last line
            buf = b""
        for raw in parts:
            complete += 1
            if complete >= first and (last is None or complete <= last) and used <= budget:
                text, bad = _decode(raw)
                lossy |= bad
                wanted.append(text[:-1] if text.endswith("\r") else text)
                used += len(text) + 8
        if not chunk:
            return wanted, complete, lossy
        if (last is not None and complete >= last) or used > budget:
            # the wanted lines are in hand: only count the rest, without splitting it into lines
            newlines, tail = buf.count(b"\n"), buf[-1:]
            while chunk := f.read(1 << 20):
                newlines += chunk.count(b"\n")
                tail = chunk[-1:]
            return wanted, complete + newlines + (1 if tail not in (b"", b"\n") else 0), lossy


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(f"the text contains an unpaired surrogate (\\u{ord(text[exc.start]):04x}) that cannot be "
                        "written as UTF-8", hint="send the character itself, or a valid \\u escape pair") from None


def _occurrences(text: str, old: str) -> list[int]:
    starts, at = [], text.find(old)
    while at >= 0:
        starts.append(at)
        at = text.find(old, at + len(old))
    return starts


def _and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _numbered(lines: list[str], first: int) -> str:
    width = len(str(first + len(lines) - 1))
    return "\n".join(f"{first + i:>{width}}| {line}" for i, line in enumerate(lines))


def _snippet(text: str, line: int, count: int, context: int = 2, most: int = 30) -> str:
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    start = max(1, line - context)
    end = min(len(lines), line + count - 1 + context)
    cut = end - (start + most - 1)
    if cut > 0:
        return _numbered(lines[start - 1:start + most - 1], start) + f"\n(and {cut} more lines)"
    return _numbered(lines[start - 1:end], start)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _not_found(rel: str, work: str, old: str) -> ToolError:
    """Why ``old`` is not in the file, and the lines most like it, for the model to copy from."""
    stripped = "\n".join(_LINE_NUMBER.sub("", line, count=1) for line in old.split("\n"))
    if stripped != old and all(_LINE_NUMBER.match(line) for line in old.split("\n") if line.strip()) \
            and stripped in work:
        return ToolError(f"old_text was not found in {rel}: it includes the line numbers that read_file shows",
                         hint="leave out the 'N| ' prefixes; copy only the text after them")
    lines = work.split("\n")
    start, size, ratio = _closest(lines, old)
    message = f"old_text was not found in {rel}"
    if _squash(old) and _squash(old) in _squash(work):
        message += "; the same words are there with different whitespace (indentation, tabs, line breaks)"
    if ratio < 0.5:
        return ToolError(message + ", and nothing in the file is close to it",
                         hint="read_file it to see its current content, then copy old_text exactly from it")
    shown = lines[start:start + min(size, 15)]
    more = f"\n(and {size - 15} more lines)" if size > 15 else ""
    span = f"line is {start + 1}" if size == 1 else f"lines are {start + 1}-{start + size}"
    return ToolError(f"{message}. The closest {span} ({ratio:.0%} similar):\n"
                     f"{_numbered(shown, start + 1)}{more}",
                     hint="copy old_text exactly from the file (without the 'N| ' prefixes), "
                          "or read_file it again if it changed")


def _closest(lines: list[str], old: str) -> tuple[int, int, float]:
    """The window of lines most similar to ``old``: (first index, line count, similarity 0-1)."""
    size = max(1, min(old.count("\n") + 1, len(lines)))
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(old)  # the text looked for is analysed once; each window is compared to it
    best = (0, size, 0.0)
    for i in range(0, max(1, len(lines) - size + 1)):
        matcher.set_seq1("\n".join(lines[i:i + size]))
        if matcher.real_quick_ratio() <= best[2] or matcher.quick_ratio() <= best[2]:
            continue
        ratio = matcher.ratio()
        if ratio > best[2]:
            best = (i, size, ratio)
    return best
