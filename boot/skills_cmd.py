"""``python cli.py skills …``: the person's view of the skills the agent promoted.

Also runs alone: ``python -m boot.skills_cmd list --json``. ``list`` shows every file of
``workspace/skills/`` (loaded or why not) and the removed skills that can be restored; ``show``
one skill's header, schema, versions and source; ``remove`` takes a skill out of use (its versions
stay); ``restore NAME@VERSION`` makes a kept version current again, as a new version.
Exit status: 0 done, 1 a bad input or unknown skill, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from core.errors import AgentError, FatalError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from boot.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli.py skills",
                                     description="Skills: functions the agent promoted to tools (workspace/skills).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="every skill, whether it loads, and the removed ones")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p = sub.add_parser("show", help="one skill: header, parameters, versions and source")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p = sub.add_parser("remove", help="take a skill out of use (its versions are kept)")
    p.add_argument("name")
    p = sub.add_parser("restore", help="make a kept version current again: NAME@VERSION")
    p.add_argument("ref", metavar="NAME@VERSION")
    return parser


def skill_rows(settings: "Settings") -> list[dict[str, Any]]:
    """One row per skill file and per removed skill: name, version, status, description, source."""
    from tool.skills.files import SkillStore
    from tool.skills.loader import SkillLoader

    store = SkillStore(settings.workspace_root)
    manifest = store.manifest()["skills"]
    loader = SkillLoader(settings, embedder=None, on_notice=lambda message: None)
    rows = []
    for skill in loader.scan():
        entry = manifest.get(skill.name) or {}
        version = skill.header.get("version") or entry.get("version")
        edited = bool(skill.spec and skill.header.get("sha256") and skill.header["sha256"] != skill.spec.function_sha256)
        status = "ok" if skill.ok else "not loaded"
        rows.append({"name": skill.name, "version": int(version) if version else None,
                     "status": status + (" (edited by hand)" if edited else "") if skill.ok else status,
                     "problem": skill.problem, "signature": skill.spec.signature() if skill.spec else None,
                     "description": skill.spec.description if skill.spec else "",
                     "source": skill.header.get("source") or ("(hand-written)" if not skill.header else ""),
                     "updated": skill.header.get("created") or entry.get("updated", ""),
                     "versions": store.versions(skill.name)})
    present = {r["name"] for r in rows}
    for name, entry in sorted(manifest.items()):
        if name not in present and isinstance(entry, dict):
            kept = store.versions(name)
            rows.append({"name": name, "version": entry.get("version"), "status": "removed", "problem": None,
                         "signature": None, "description": entry.get("description", ""),
                         "source": entry.get("source", ""), "updated": entry.get("updated", ""), "versions": kept})
    return rows


def skills_table(settings: "Settings") -> "RenderableType":
    """The skills as a rich table (``/skills`` in the chat prints it); a line when there are none."""
    from rich.table import Table
    from rich.text import Text

    rows = skill_rows(settings)
    if not rows:
        return Text(f"no skills yet in {settings.workspace_root / 'skills'}: the agent makes one with "
                    "promote_skill (or drop a .py file there)")
    table = Table(title=f"skills in {settings.workspace_root / 'skills'}", title_justify="left")
    for column in ("name", "version", "status", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = row["status"]
        style = "green" if status.startswith("ok") else ("dim" if status == "removed" else "red")
        detail = row["problem"] if row["problem"] else row["description"]
        if status == "removed" and row["versions"]:
            detail = f"{detail} (restore with: skills restore {row['name']}@{row['versions'][-1]})".strip()
        table.add_row(row["name"], str(row["version"] or "-"), f"[{style}]{status}[/{style}]", detail)
    return table


def _show(settings: "Settings", name: str, as_json: bool, console: "Console") -> int:
    from tool.skills.files import SkillStore, split_header
    from tool.skills.validate import check_name

    check_name(name)
    row = next((r for r in skill_rows(settings) if r["name"] == name), None)
    if row is None:
        raise _Unknown(name)
    store = SkillStore(settings.workspace_root)
    text = store.read_current(name)  # confined: never follows a linked skills folder
    header, body = split_header(text)
    entry = store.entry(name) or {}
    if as_json:
        print(json.dumps({**row, "header": header, "history": entry.get("versions", []), "source_code": body},
                         indent=2))
        return 0
    from rich.syntax import Syntax

    console.print(f"[bold]{name}[/bold]  {row['signature'] or ''}")
    for key in ("status", "problem", "description", "source", "updated"):
        if row.get(key):
            console.print(f"  {key}: {row[key]}")
    kept = ", ".join(f"{name}@{v}" for v in row["versions"]) or "none"
    console.print(f"  kept versions: {kept}")
    if header.get("sha256"):
        console.print(f"  sha256 of the function when promoted: {header['sha256']}")
    if body:
        console.print(Syntax(body, "python", line_numbers=True))
    return 0


class _Unknown(AgentError):
    def __init__(self, name: str) -> None:
        super().__init__(f"there is no skill named {name!r}", hint="see `python cli.py skills list`")


def run(args: argparse.Namespace, settings: "Settings", console: "Console") -> int:
    from tool.skills.files import SkillStore, parse_version_ref

    if args.command == "list":
        if args.json:
            print(json.dumps(skill_rows(settings), indent=2))
        else:
            console.print(skills_table(settings))
        return 0
    if args.command == "show":
        return _show(settings, args.name, args.json, console)
    store = SkillStore(settings.workspace_root)
    if args.command == "remove":
        store.remove(args.name)
        kept = store.versions(args.name)
        console.print(f"removed skill {args.name}; it is no longer offered. Bring it back with "
                      f"`python cli.py skills restore {args.name}@{kept[-1]}`")
        return 0
    name, version = parse_version_ref(args.ref)
    written = store.restore(name, version)
    console.print(f"restored {name}@{version} as version {written.version} of skill {name}; "
                  "the agent offers it from its next step")
    return 0


def main(argv: list[str], settings: "Settings", *, console: "Console | None" = None) -> int:
    """Run ``skills`` with ``argv`` (without the word ``skills``); returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage or --help
        return int(exc.code or 0)
    if console is None:
        from rich.console import Console

        console = Console()
    try:
        return run(args, settings, console)
    except AgentError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2 if isinstance(exc, FatalError) else 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    from boot.subcommand import run_subcommand

    run_subcommand(main)
