"""What the model sees of the workspace before its first step: the files, and the ones the task names.

Small models do better with a prompt that already holds the code to change (aider's lesson): a
list of the workspace's files (a small repository map) and the text of the files the task names,
so a one-file fix is one ``edit_file`` call instead of a search, a read and then the edit. The
files shown count as read for the read-before-write rule of the file tools.

The view is made once per task and kept, so it does not change under the prefix cache while the
task runs; it says it shows the files as they were when the task began.
"""

from __future__ import annotations

import re
from typing import Callable

from core.errors import ToolError
from core.tokens import CHARS_PER_TOKEN
from tool.files import FileTools
from tool.search import walk

#: most entries in the file list
MAX_LISTED = 60
#: files named by the task that are shown at most
MAX_SHOWN = 4
#: with no file named, a workspace of at most this many small text files is shown whole
SMALL_WORKSPACE_FILES = 3
_TEXT_SUFFIXES = (".py", ".md", ".txt", ".json", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".csv", ".tsv",
                  ".js", ".ts", ".tsx", ".jsx", ".html", ".css", ".sh", ".rs", ".go", ".java", ".c", ".h",
                  ".cpp", ".hpp", ".rb", ".sql", ".xml", ".env.example", ".jsonl")
_NAME = re.compile(r"[\w./-]*\w\.\w+|[\w-]+/[\w./-]+")


class WorkspaceView:
    """A prompt section (``(task, session_id) -> text``) showing the workspace to the model."""

    def __init__(self, files: FileTools, *, budget_tokens: int = 3000,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.files = files
        self.budget_chars = budget_tokens * CHARS_PER_TOKEN
        self.on_error = on_error
        self._made: dict[tuple[str, str], str] = {}

    def __call__(self, task: str, session_id: str) -> str | None:
        key = (session_id, task)
        if key not in self._made:
            self._made = {key: self._make(task)}  # one task at a time: keep only the current view
        return self._made[key] or None

    def _listing(self) -> list[str]:
        paths: list[str] = []
        for _fd, entry in walk(self.files.root, ".", max_depth=4):
            if entry.skipped or entry.kind != "file":
                continue
            paths.append(entry.path)
            if len(paths) > MAX_LISTED:
                break
        return paths

    def _make(self, task: str) -> str:
        if self.budget_chars <= 0:
            return ""
        try:
            paths = self._listing()
        except (ToolError, OSError):
            return ""
        if not paths:
            return "Files in the workspace: none (it is empty)."
        listed = paths[:MAX_LISTED]
        more = "\n(and more; list_files shows them)" if len(paths) > MAX_LISTED else ""
        parts = ["Files in the workspace:\n" + "\n".join(listed) + more]
        shown = self._named(task, set(paths))
        if not shown:
            texts = [p for p in paths if p.endswith(_TEXT_SUFFIXES)]
            if 0 < len(texts) <= SMALL_WORKSPACE_FILES:
                shown = texts
        left = self.budget_chars - len(parts[0])
        bodies = []
        for path in shown[:MAX_SHOWN]:
            try:
                result = self.files.read_file(path, line_numbers=False)  # confinement, protected names
            except ToolError:
                continue
            text = result.content
            if len(text) > left:
                continue  # too long to show whole: the model reads it with read_file
            left -= len(text)
            bodies.append(f"--- {path} ---\n{text}\n--- end of {path} ---")
        if bodies:
            parts.append("The files the task is about, as they were when the task began "
                         "(you have read them; edit them with edit_file):\n" + "\n".join(bodies))
        return "\n\n".join(parts)

    @staticmethod
    def _named(task: str, existing: set[str]) -> list[str]:
        """Workspace files the task names, by path or by file name, in the order named."""
        by_name: dict[str, list[str]] = {}
        for path in existing:
            by_name.setdefault(path.rsplit("/", 1)[-1], []).append(path)
        found: list[str] = []
        for match in _NAME.finditer(task):
            word = match.group(0).strip("./").rstrip(".,:;")
            candidates = [word] if word in existing else by_name.get(word, [])
            if len(candidates) == 1 and candidates[0] not in found:
                found.append(candidates[0])
        return found
