"""Skill files on disk: the header, the manifest and the kept versions.

Layout of ``workspace/skills/``::

    <name>.py                 the skill offered as tool <name>: a header, then the module's source
    manifest.json             what was promoted: versions, dates, sources, hashes (written atomically)
    .versions/<name>@<v>.py   every version ever written, so any can be restored
    .manifest.lock            serialises writers (the agent and ``cli.py skills`` may run at once)

Names reach the file system only after :func:`tool.skills.validate.check_name`. Every file
operation is confined to the WORKSPACE root with paths ``skills/...`` (:mod:`core.paths` walks
each component with ``O_NOFOLLOW``), and a ``skills`` that is a symbolic link is refused: sandboxed
code can write the workspace, so it could otherwise point the unsandboxed writers anywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from core.errors import ToolError
from core.paths import confined_dir, open_confined, write_atomic
from tool.skills.schema import SkillInvalid
from tool.skills.validate import analyse, check_name

HEADER_START = "# --- skill header (written by promote_skill; edit the code below, not these lines) ---"
HEADER_END = "# --- end of skill header ---"
HEADER_KEYS = ("name", "function", "version", "created", "source", "sha256", "description", "restored_from")
MANIFEST = "manifest.json"
VERSIONS = ".versions"
LOCK = ".manifest.lock"
_VERSION_REF = re.compile(r"^([a-z][a-z0-9_]*)@([1-9][0-9]{0,5})$")


FOLDER = "skills"


def skills_dir(workspace_root: str | os.PathLike[str]) -> Path:
    return Path(workspace_root) / FOLDER


def refuse_linked_folder(workspace_root: str | os.PathLike[str]) -> None:
    """Raise :class:`SkillInvalid` when ``workspace/skills`` is a symbolic link (or not a folder).

    Code run in the sandbox can write the workspace; a ``skills`` link would send the
    unsandboxed writers (promote_skill, ``cli.py skills``) and the loader elsewhere.
    """
    path = skills_dir(workspace_root)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise SkillInvalid(f"{path} is a symbolic link, not a folder: skills are not read or written through it",
                           hint=f"remove the link and make {FOLDER}/ a real folder inside the workspace")
    if not stat.S_ISDIR(st.st_mode):
        raise SkillInvalid(f"{path} is a file, not a folder", hint=f"move it away so {FOLDER}/ can be a folder")


def split_header(text: str) -> tuple[dict[str, str], str]:
    """(header fields, the module's source) of a skill file; a file without a header has none."""
    if not text.startswith(HEADER_START + "\n"):
        return {}, text
    end = text.find("\n" + HEADER_END + "\n")
    if end < 0:
        return {}, text
    fields: dict[str, str] = {}
    for line in text[len(HEADER_START) + 1:end].splitlines():
        key, sep, value = line.removeprefix("# ").partition(": ")
        if sep and key in HEADER_KEYS:
            fields[key] = value
    return fields, text[end + len(HEADER_END) + 2:]


def make_header(fields: dict[str, Any]) -> str:
    lines = [HEADER_START]
    for key in HEADER_KEYS:
        value = fields.get(key)
        if value is not None and value != "":
            lines.append(f"# {key}: {' '.join(str(value).split())}")
    return "\n".join(lines + [HEADER_END]) + "\n"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Written:
    """One skill version written to disk."""

    name: str
    version: int
    path: Path
    replaced: bool  # an earlier version existed


class SkillStore:
    """The skills folder of one workspace: write, remove and restore skills; read the manifest."""

    def __init__(self, workspace_root: str | os.PathLike[str]) -> None:
        self.workspace = Path(workspace_root)
        self.root = skills_dir(workspace_root)  # for messages; files are reached through self.workspace

    def _rel(self, *parts: str) -> str:
        return "/".join((FOLDER, *parts))

    def ensure(self) -> Path:
        """Create ``skills/`` and ``skills/.versions/`` (never through a symbolic link)."""
        refuse_linked_folder(self.workspace)
        for parent, name in ((".", FOLDER), (FOLDER, VERSIONS)):
            with confined_dir(self.workspace, parent) as fd, contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
        refuse_linked_folder(self.workspace)  # swapped in between the check and the mkdir
        return self.root

    @contextlib.contextmanager
    def _folder(self) -> Iterator[int]:
        """A descriptor of ``skills/`` opened without following links."""
        refuse_linked_folder(self.workspace)
        with confined_dir(self.workspace, FOLDER) as fd:
            yield fd

    def _read(self, *parts: str) -> bytes:
        refuse_linked_folder(self.workspace)
        with open_confined(self.workspace, self._rel(*parts), "rb") as f:
            return f.read()

    def _write(self, data: bytes, *parts: str) -> None:
        refuse_linked_folder(self.workspace)
        write_atomic(self.workspace, self._rel(*parts), data)

    def _is_file(self, name: str) -> bool:
        """Whether ``skills/<name>`` is a regular file (a symbolic link is not)."""
        try:
            with self._folder() as fd:
                return stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False
        except ToolError:
            if os.path.lexists(self.root):
                raise
            return False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The manifest, for a read-modify-write under an exclusive lock; written back on success."""
        self.ensure()
        with open_confined(self.workspace, self._rel(LOCK), "ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            manifest = self.manifest()
            yield manifest
            data = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            self._write(data.encode("utf-8"), MANIFEST)

    def manifest(self) -> dict[str, Any]:
        """The manifest (an empty one when missing or unreadable: the skill files are the truth)."""
        refuse_linked_folder(self.workspace)
        try:
            data = json.loads(self._read(MANIFEST).decode("utf-8"))
        except (OSError, ValueError, ToolError):
            return {"format": 1, "skills": {}}
        if not isinstance(data, dict) or not isinstance(data.get("skills"), dict):
            return {"format": 1, "skills": {}}
        return data

    def entry(self, name: str) -> dict[str, Any] | None:
        found = self.manifest()["skills"].get(name)
        return found if isinstance(found, dict) else None

    def read_current(self, name: str) -> str:
        """The text of ``skills/<name>.py``; empty when there is none."""
        if not self._is_file(f"{check_name(name)}.py"):
            return ""
        return self._read(f"{name}.py").decode("utf-8", errors="replace")

    def versions(self, name: str) -> list[int]:
        """The kept versions of ``name``, oldest first."""
        refuse_linked_folder(self.workspace)
        found = []
        with contextlib.suppress(OSError, ToolError), confined_dir(self.workspace, self._rel(VERSIONS)) as fd:
            for entry in os.scandir(fd):
                match = _VERSION_REF.match(entry.name.removesuffix(".py"))
                if match and match.group(1) == name and entry.name.endswith(".py"):
                    found.append(int(match.group(2)))
        return sorted(found)

    def save(self, name: str, function: str, module_source: str, *, source: str, function_sha256: str,
             description: str, restored_from: int | None = None) -> Written:
        """Write ``module_source`` as the next version of skill ``name`` (the old one stays restorable)."""
        check_name(name)
        current = self.root / f"{name}.py"
        with self._locked() as manifest:
            entry = manifest["skills"].get(name) or {}
            existing = self._is_file(f"{name}.py")
            version = max([int(entry.get("version", 0))] + self.versions(name)) + 1
            if existing and not self.versions(name):
                # a hand-written file promoted over: keep it as version 1 before replacing it
                self._write(self._read(f"{name}.py"), VERSIONS, f"{name}@{version}.py")
                version += 1
            created = now_iso()
            header = make_header({"name": name, "function": function, "version": version, "created": created,
                                  "source": source, "sha256": function_sha256, "description": description,
                                  "restored_from": restored_from})
            body = module_source if module_source.endswith("\n") else module_source + "\n"
            data = (header + body).encode("utf-8")
            self._write(data, VERSIONS, f"{name}@{version}.py")
            self._write(data, f"{name}.py")
            history = list(entry.get("versions", []))
            history.append({"version": version, "created": created, "source": source, "sha256": function_sha256,
                            "file_sha256": hashlib.sha256(data).hexdigest(),
                            **({"restored_from": restored_from} if restored_from else {})})
            manifest["skills"][name] = {"name": name, "function": function, "version": version,
                                        "created": entry.get("created", created), "updated": created,
                                        "source": source, "sha256": function_sha256, "description": description,
                                        "removed": False, "versions": history}
        return Written(name, version, current, existing)

    def remove(self, name: str) -> Path:
        """Take skill ``name`` out of use; its versions stay in ``.versions`` for :meth:`restore`."""
        check_name(name)
        current = self.root / f"{name}.py"
        with self._locked() as manifest:
            if not self._is_file(f"{name}.py"):
                raise SkillInvalid(f"there is no skill named {name!r}", hint="see `python cli.py skills list`")
            if not self.versions(name):
                # hand-written: keep what is removed, so it can come back
                self._write(self._read(f"{name}.py"), VERSIONS, f"{name}@1.py")
            with self._folder() as fd:
                os.unlink(f"{name}.py", dir_fd=fd)
            entry = manifest["skills"].get(name)
            if isinstance(entry, dict):
                entry["removed"] = True
                entry["updated"] = now_iso()
        return current

    def restore(self, name: str, version: int) -> Written:
        """Make kept version ``version`` of ``name`` current again, as a new version (history is kept)."""
        fields, body = split_header(self.read_version(name, version))
        function = fields.get("function") or name
        spec = analyse(body, function, name=name, description=fields.get("description") or None,
                       filename=f"{name}@{version}.py")
        return self.save(name, function, body, source=fields.get("source") or f"skills/{name}.py",
                         function_sha256=spec.function_sha256, description=spec.description, restored_from=version)

    def read_version(self, name: str, version: int) -> str:
        check_name(name)
        kept = self.versions(name)
        if int(version) not in kept:
            listed = ", ".join(f"{name}@{v}" for v in kept) or "none"
            raise SkillInvalid(f"there is no version {version} of skill {name!r}",
                               hint=f"the kept versions are: {listed}")
        return self._read(VERSIONS, f"{name}@{int(version)}.py").decode("utf-8")


def parse_version_ref(text: str) -> tuple[str, int]:
    """``("name", 3)`` from ``"name@3"``; :class:`SkillInvalid` for anything else."""
    match = _VERSION_REF.match(text.strip())
    if not match:
        raise SkillInvalid(f"{text!r} is not NAME@VERSION", hint="for example: count_words@2 (see `skills show NAME`)")
    return match.group(1), int(match.group(2))
