"""The workspace before a run: where the agent works, said plainly, and its own files kept out of git.

The agent keeps its state in the workspace: ``.agent/`` (sessions, memories, the chat's history),
``skills/.versions/`` and ``skills/.manifest.lock`` beside the skills it promotes, and, while a
sandboxed command runs, an empty ``.env`` placeholder. None of it is the person's work, and a
``git add -A`` must not pick it up. So, without touching the person's ``.gitignore``:

- ``.agent/`` holds a ``.gitignore`` of ``*`` (itself included), which works in any repository,
  even one made after the agent first ran;
- when the workspace is inside a git repository, those paths are listed in that repository's
  ``info/exclude`` (git's own place for local, unshared ignores), once, in a marked block.

``info/exclude`` only hides untracked files: a ``.env`` the person committed stays tracked.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: first line of the block this program writes to ``info/exclude``
MARK = "# local-coder: the agent's own files in its workspace (added by the agent; safe to remove)"
#: workspace-relative paths of the agent's state, as ignore patterns
STATE_PATTERNS = (".agent/", "skills/.versions/", "skills/.manifest.lock", ".env")
#: folders and files that make the current folder look like someone's project
PROJECT_MARKS = (".git", "pyproject.toml", "setup.py", "package.json", "Cargo.toml", "go.mod")


def keep_out_of_git(root: Path) -> Path | None:
    """Make the agent's state in ``root`` invisible to git; returns the ``info/exclude`` written, if any.

    Never raises for a workspace git cannot read or write (a read-only checkout, no git at all):
    the agent works the same, only ``git status`` shows its files.
    """
    state = root / ".agent"
    try:
        state.mkdir(parents=True, exist_ok=True)
        ignore = state / ".gitignore"
        if not ignore.is_file():
            ignore.write_text("# the agent's state: never committed\n*\n", encoding="utf-8")
    except OSError:
        pass
    exclude = _exclude_file(root)
    if exclude is None:
        return None
    top = _repo_top(root, exclude)
    if top is None:
        return None
    try:
        prefix = root.resolve().relative_to(top).as_posix()
    except ValueError:
        return None
    prefix = "" if prefix == "." else prefix + "/"
    wanted = [f"/{prefix}{p}" for p in STATE_PATTERNS]
    try:
        text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        missing = [w for w in wanted if w not in text.splitlines()]
        if not missing:
            return exclude
        exclude.parent.mkdir(parents=True, exist_ok=True)
        block = ("" if not text or text.endswith("\n") else "\n") + (MARK + "\n" if MARK not in text else "")
        with open(exclude, "a", encoding="utf-8") as out:
            out.write(block + "\n".join(missing) + "\n")
    except OSError:
        return None
    return exclude


def _exclude_file(root: Path) -> Path | None:
    """The ``info/exclude`` of the repository ``root`` is in (worktrees share their main one's)."""
    try:
        found = subprocess.run(["git", "-C", str(root), "rev-parse", "--git-path", "info/exclude"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        found = None
    if found is not None and found.returncode == 0 and found.stdout.strip():
        path = Path(found.stdout.strip())
        return path if path.is_absolute() else (root / path)
    if found is not None and found.returncode != 0 and "not a git repository" in found.stderr:
        return None
    # no git program: look for a plain .git folder upwards
    for folder in (root.resolve(), *root.resolve().parents):
        if (folder / ".git").is_dir():
            return folder / ".git" / "info" / "exclude"
    return None


def _repo_top(root: Path, exclude: Path) -> Path | None:
    try:
        found = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                               capture_output=True, text=True, timeout=10)
        if found.returncode == 0 and found.stdout.strip():
            return Path(found.stdout.strip()).resolve()
    except (OSError, subprocess.TimeoutExpired):
        pass
    git_dir = exclude.parent.parent
    return git_dir.parent.resolve() if git_dir.name == ".git" else None


def looks_like_project(folder: Path) -> bool:
    """Whether ``folder`` looks like someone's project (a ``.git``, a ``pyproject.toml``…)."""
    return any((folder / mark).exists() for mark in PROJECT_MARKS)


def workspace_notes(root: Path, *, given: bool, cwd: Path, agent_home: Path) -> list[str]:
    """What to tell the person about where the agent works, before anything is created.

    ``given``: the workspace came from a flag, the environment or ``.env``; ``agent_home``: the
    agent's own folder (running from there, the default workspace is the documented one).
    """
    notes: list[str] = []
    where = _shown(root, cwd)
    if not root.exists():
        if given:
            notes.append(f"the workspace {where} does not exist: creating it (check the path if you meant "
                         f"another folder)")
        else:
            notes.append(f"creating the workspace {where}")
    try:
        home = cwd.resolve() == agent_home.resolve()
    except OSError:
        home = False
    if not given and not home and looks_like_project(cwd) and root.resolve() != cwd.resolve():
        notes.append(f"the agent works in {where}, not in this project folder; to work on this project, "
                     f"give --workspace . (or set AGENT_WORKSPACE)")
    return notes


def _shown(root: Path, cwd: Path) -> str:
    try:
        rel = os.path.relpath(root, cwd)
    except ValueError:
        return str(root)
    return "./" + rel if not rel.startswith("..") and rel != "." else str(root)
