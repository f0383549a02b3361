"""Skill files on disk: the header, the manifest and the kept versions.

Layout of ``workspace/skills/``::

    <name>.py                 the skill offered as tool <name>: a header, then the module's source
    manifest.json             what was promoted: versions, dates, sources, hashes (written atomically)
    .versions/<name>@<v>.py   every version ever written, so any can be restored
    .manifest.lock            serialises writers (the agent and ``cli.py skills`` may run at once)

Names reach the file system only after :func:`tool.skills.validate.check_name`, and every write
goes through :func:`core.paths.write_atomic` confined to this folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from core.paths import write_atomic
from tool.skills.schema import SkillInvalid
from tool.skills.validate import analyse, check_name

HEADER_START = "# --- skill header (written by promote_skill; edit the code below, not these lines) ---"
HEADER_END = "# --- end of skill header ---"
HEADER_KEYS = ("name", "function", "version", "created", "source", "sha256", "description", "restored_from")
MANIFEST = "manifest.json"
VERSIONS = ".versions"
LOCK = ".manifest.lock"
_VERSION_REF = re.compile(r"^([a-z][a-z0-9_]*)@([1-9][0-9]{0,5})$")


def skills_dir(workspace_root: str | os.PathLike[str]) -> Path:
    return Path(workspace_root) / "skills"


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
        self.root = skills_dir(workspace_root)

    def ensure(self) -> Path:
        (self.root / VERSIONS).mkdir(parents=True, exist_ok=True)
        return self.root

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The manifest, for a read-modify-write under an exclusive lock; written back on success."""
        self.ensure()
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            manifest = self.manifest()
            yield manifest
            data = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            write_atomic(self.root, MANIFEST, data.encode("utf-8"))
        finally:
            os.close(fd)

    def manifest(self) -> dict[str, Any]:
        """The manifest (an empty one when missing or unreadable: the skill files are the truth)."""
        try:
            data = json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"format": 1, "skills": {}}
        if not isinstance(data, dict) or not isinstance(data.get("skills"), dict):
            return {"format": 1, "skills": {}}
        return data

    def entry(self, name: str) -> dict[str, Any] | None:
        found = self.manifest()["skills"].get(name)
        return found if isinstance(found, dict) else None

    def _file(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.py"

    def _version_file(self, name: str, version: int) -> Path:
        return self.root / VERSIONS / f"{check_name(name)}@{int(version)}.py"

    def versions(self, name: str) -> list[int]:
        """The kept versions of ``name``, oldest first."""
        folder = self.root / VERSIONS
        found = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                match = _VERSION_REF.match(entry.name.removesuffix(".py"))
                if match and match.group(1) == name and entry.name.endswith(".py"):
                    found.append(int(match.group(2)))
        return sorted(found)

    def save(self, name: str, function: str, module_source: str, *, source: str, function_sha256: str,
             description: str, restored_from: int | None = None) -> Written:
        """Write ``module_source`` as the next version of skill ``name`` (the old one stays restorable)."""
        check_name(name)
        with self._locked() as manifest:
            entry = manifest["skills"].get(name) or {}
            current = self._file(name)
            existing = current.is_file()
            version = max([int(entry.get("version", 0))] + self.versions(name)) + 1
            if existing and not self.versions(name):
                # a hand-written file promoted over: keep it as version 1 before replacing it
                old = current.read_bytes()
                write_atomic(self.root, f"{VERSIONS}/{name}@{version}.py", old)
                version += 1
            created = now_iso()
            header = make_header({"name": name, "function": function, "version": version, "created": created,
                                  "source": source, "sha256": function_sha256, "description": description,
                                  "restored_from": restored_from})
            body = module_source if module_source.endswith("\n") else module_source + "\n"
            data = (header + body).encode("utf-8")
            write_atomic(self.root, f"{VERSIONS}/{name}@{version}.py", data)
            write_atomic(self.root, f"{name}.py", data)
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
        current = self._file(name)
        with self._locked() as manifest:
            if not current.is_file() or current.is_symlink():
                raise SkillInvalid(f"there is no skill named {name!r}", hint="see `python cli.py skills list`")
            if not self.versions(name):
                # hand-written: keep what is removed, so it can come back
                write_atomic(self.root, f"{VERSIONS}/{name}@1.py", current.read_bytes())
            current.unlink()
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
        path = self._version_file(name, version)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            kept = ", ".join(f"{name}@{v}" for v in self.versions(name)) or "none"
            raise SkillInvalid(f"there is no version {version} of skill {name!r}",
                               hint=f"the kept versions are: {kept}") from None


def parse_version_ref(text: str) -> tuple[str, int]:
    """``("name", 3)`` from ``"name@3"``; :class:`SkillInvalid` for anything else."""
    match = _VERSION_REF.match(text.strip())
    if not match:
        raise SkillInvalid(f"{text!r} is not NAME@VERSION", hint="for example: count_words@2 (see `skills show NAME`)")
    return match.group(1), int(match.group(2))
