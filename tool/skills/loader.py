"""The skill loader: a tool provider that reads ``workspace/skills/*.py`` before every model call.

A scan costs one ``lstat`` per file; only files whose (mtime, size, inode) changed are read and
validated again (statically: skill code is never imported into the agent's process). New,
changed and deleted files — promoted or dropped there by hand — take effect on the next step. A
file that fails validation is reported once per content (notice and log) and not offered; no
skill file can stop the agent.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from core.errors import AgentError
from core.tools import Tool, ToolResult
from core.paths import confined_dir
from tool.skills.files import refuse_linked_folder, skills_dir, split_header
from tool.skills.relevance import MAX_OFFERED, EmbedderFactory, Relevance
from tool.skills.runner import SkillRunner
from tool.skills.schema import SkillInvalid
from tool.skills.validate import MAX_SOURCE_BYTES, SkillSpec, analyse, check_name

log = logging.getLogger("agent.skills")

#: names of the project's own tools: no skill may take one, even while that tool is switched off
BUILTIN_NAMES = frozenset({"read_file", "write_file", "edit_file", "list_files", "search_files", "shell", "pyexe",
                           "fetch", "data_view", "memory", "promote_skill"})


@dataclass
class LoadedSkill:
    """One file of the skills folder as last seen: its spec and tool, or why it is not loaded."""

    name: str
    path: Path
    key: tuple[int, int, int]
    header: dict[str, str] = field(default_factory=dict)
    spec: SkillSpec | None = None
    tool: Tool | None = None
    problem: str | None = None
    data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.tool is not None


class SkillLoader:
    """Offers the valid skills of ``workspace/skills`` (the nearest ones when there are many).

    ``embedder``: a factory for the embedder ranking skills (default: the settings' one, made
    when first needed; pass ``lambda: shared`` to reuse one already loaded, ``None`` for none).
    ``embed_in_background``: load it in a thread, offering the most recently used skills meanwhile.
    """

    def __init__(self, settings: Any = None, *, workspace: str | os.PathLike[str] | None = None,
                 registry: Any = None, runner: SkillRunner | None = None,
                 reserved: Callable[[], Iterable[str]] | None = None,
                 on_notice: Callable[[str], None] | None = None, max_offered: int = MAX_OFFERED,
                 embedder: EmbedderFactory | None | bool = True, embed_in_background: bool = True) -> None:
        if workspace is None:
            if settings is None:
                raise ValueError("SkillLoader needs settings or a workspace")
            workspace = settings.workspace_root
        self.workspace = Path(workspace)
        self.root = skills_dir(workspace)  # for messages; scanned through self.workspace without following links
        self.settings = settings
        self._registry = registry
        self._reserved = reserved
        self._on_notice = on_notice
        self._runner = runner
        if embedder is True:
            embedder = _default_embedder(settings)
        self.relevance = Relevance(embedder or None, limit=max_offered, on_problem=self._notice,
                                   background=embed_in_background)
        self._skills: dict[str, LoadedSkill] = {}
        self._reported: set[tuple[str, tuple[int, int, int], str]] = set()
        self._used: dict[str, float] = {}
        self._scanned = False
        self._lock = threading.RLock()
        self._import_cache: dict[str, str | None] = {}

    # --- notices -----------------------------------------------------------------------------

    def _notice(self, message: str) -> None:
        log.info("%s", message)
        target = self._on_notice
        if target is None and self._registry is not None:
            target = getattr(self._registry, "on_notice", None)
        if target is not None:
            try:
                target(message)
            except Exception:  # a broken listener must not break loading
                log.exception("skill notice listener failed")

    def _reserved_names(self) -> set[str]:
        names = set(BUILTIN_NAMES)
        if self._reserved is not None:
            names |= set(self._reserved())
        elif self._registry is not None and hasattr(self._registry, "registered_names"):
            names |= set(self._registry.registered_names())
        return names

    @property
    def runner(self) -> SkillRunner:
        if self._runner is None:
            self._runner = SkillRunner(self.settings)
        return self._runner

    # --- scanning ------------------------------------------------------------------------------

    def scan(self) -> list[LoadedSkill]:
        """Look at the folder now; returns every skill file seen (loaded or not), by name."""
        with self._lock:
            first = not self._scanned
            self._scanned = True
            seen: dict[str, LoadedSkill] = {}
            try:
                refuse_linked_folder(self.workspace)
                with confined_dir(self.workspace, "skills") as fd:
                    for entry in list(os.scandir(fd)):
                        self._scan_entry(fd, entry, first, seen)
            except AgentError as exc:
                if os.path.lexists(self.root):
                    self._report(("", (0, 0, 0), exc.message),
                                 f"skills: not loaded: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
            except OSError as exc:
                self._report(("", (0, 0, 0), str(exc)), f"skills: cannot read {self.root}: {exc}")
            if not first:
                for name in sorted(set(self._skills) - set(seen)):
                    self._notice(f"skill {name} removed (its file is gone)")
            self._skills = seen
            return [seen[n] for n in sorted(seen)]

    def _scan_entry(self, fd: int, entry: os.DirEntry[str], first: bool, seen: dict[str, LoadedSkill]) -> None:
        if not entry.name.endswith(".py") or entry.name.startswith("."):
            return
        name = entry.name[:-3]
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return  # deleted while we looked
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        old = self._skills.get(name)
        if old is not None and old.key == key:
            seen[name] = old
            return
        skill = self._load(name, self.root / entry.name, st, key, dir_fd=fd)
        seen[name] = skill
        if skill.problem:
            self._report((name, key, skill.problem), f"skill file skills/{entry.name} is not loaded: {skill.problem}")
        elif not first:
            self._notice(f"skill {name} {'reloaded (the file changed)' if old else 'loaded'}")

    def _report(self, key: tuple[str, tuple[int, int, int], str], message: str) -> None:
        if key in self._reported:
            return
        self._reported.add(key)
        log.warning("%s", message)
        self._notice(message)

    def _load(self, name: str, path: Path, st: os.stat_result, key: tuple[int, int, int],
              *, dir_fd: int | None = None) -> LoadedSkill:
        skill = LoadedSkill(name, path, key)
        try:
            check_name(name)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
                raise SkillInvalid("it is not a regular file (a symbolic link or something else)",
                                   hint="put the skill's source itself in the folder")
            if st.st_size > MAX_SOURCE_BYTES:
                raise SkillInvalid(f"it is larger than {MAX_SOURCE_BYTES // 1024} KB", hint="keep a skill small")
            fd = os.open(path.name if dir_fd is not None else path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as f:
                skill.data = f.read(MAX_SOURCE_BYTES + 1)
            try:
                text = skill.data.decode("utf-8")
            except UnicodeDecodeError:
                raise SkillInvalid("it is not UTF-8 text", hint="save it as UTF-8") from None
            skill.header, _ = split_header(text)
            if skill.header.get("name", name) != name:
                raise SkillInvalid(f"its header names skill {skill.header['name']!r}, not {name!r}",
                                   hint=f"rename the file to {skill.header['name']}.py or fix the header")
            function = skill.header.get("function") or name
            # the whole file is analysed (header lines are comments), so line numbers match the file
            skill.spec = analyse(text, function, name=name, description=skill.header.get("description") or None,
                                 filename=str(path), import_cache=self._import_cache)
            skill.tool = self._tool(skill)
        except AgentError as exc:
            skill.problem = exc.message + (f" ({exc.hint})" if exc.hint else "")
        except (OSError, ValueError, RecursionError, MemoryError) as exc:
            skill.problem = f"cannot read it: {exc}"
        return skill

    # --- offering ------------------------------------------------------------------------------

    def _tool(self, skill: LoadedSkill) -> Tool:
        spec = skill.spec
        assert spec is not None
        data, path = skill.data, skill.path
        runner_timeout = self._timeout()

        def call_skill(args: dict[str, Any], cancel: threading.Event | None) -> ToolResult:
            self._used[spec.name] = time.monotonic()
            value = self.runner.call(path, spec.name, spec.function, args, data=data, cancel=cancel)
            text = value if isinstance(value, str) else _json(value)
            return ToolResult(text or "(empty string)", summary=f"{spec.name} returned {_brief(value)}",
                              data={"skill": spec.name, "value": value})

        def run_skill(*, cancel: threading.Event | None = None, **args: Any) -> ToolResult:
            return call_skill(args, cancel)  # the registry's stop event: Ctrl-C kills the skill's process

        def run_skill_named_cancel(**args: Any) -> ToolResult:
            return call_skill(args, None)  # the skill's own argument is called cancel: it gets no event

        fn = run_skill_named_cancel if "cancel" in (spec.parameters.get("properties") or {}) else run_skill
        return Tool(name=spec.name, description=spec.description, parameters=spec.parameters, fn=fn,
                    read_only=False, timeout_s=runner_timeout + 15, source="skill")

    def _timeout(self) -> float:
        if self._runner is not None:
            return self._runner.timeout_s
        return float(getattr(self.settings, "tool_timeout_s", 120.0))

    def tools(self) -> list[Tool]:
        """The skills to offer for the next model call (the folder is scanned first)."""
        return self.tools_for(None)

    def tools_for(self, task: str | None) -> list[Tool]:
        """Like :meth:`tools`, choosing by relevance to ``task`` when there are many skills."""
        skills = self.scan()
        reserved = self._reserved_names()
        usable = []
        for skill in skills:
            if skill.tool is None:
                continue
            if skill.name in reserved:
                self._report((skill.name, skill.key, "reserved"),
                             f"skill file skills/{skill.name}.py is not loaded: {skill.name!r} is the name of a "
                             "built-in tool (rename the file and the skill)")
                continue
            usable.append(skill)
        recent = sorted(self._used, key=lambda n: -self._used[n])
        recent += [s.name for s in sorted(usable, key=lambda s: -s.key[0]) if s.name not in self._used]
        chosen = set(self.relevance.choose(task, [(s.name, s.spec.description) for s in usable if s.spec], recent))
        return [s.tool for s in usable if s.name in chosen and s.tool is not None]

    def skills(self) -> list[LoadedSkill]:
        """Every skill file as of a fresh scan, loaded or not."""
        return self.scan()


def _default_embedder(settings: Any) -> EmbedderFactory:
    def make() -> Any:
        from store.embed import SentenceTransformerEmbedder, make_embedder

        return make_embedder(settings) if settings is not None else SentenceTransformerEmbedder()

    return make


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


#: longest value shown in a skill call's one-line summary
BRIEF_CHARS = 60


def _brief(value: Any) -> str:
    """The value a skill returned, short, for the person's one line: ``'hello-world'``, ``[1, 2, 3]``."""
    flat = " ".join((value if isinstance(value, str) else _json(value)).split())
    if len(flat) > BRIEF_CHARS:
        flat = flat[:BRIEF_CHARS - 1] + "…"
    return repr(flat) if isinstance(value, str) else flat
