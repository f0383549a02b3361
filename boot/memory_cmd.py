"""``python cli.py memory …``: the person's view of long-term memory.

Also runs alone: ``python -m boot.memory_cmd search "flaky test" --json``. Tables for people,
``--json`` for scripts. Exit status: 0 done, 1 a bad input or unknown id, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from core.errors import AgentError, FatalError

if TYPE_CHECKING:
    from boot.settings import Settings
    from store.embed import Embedder
    from store.memory import MemoryStore

KINDS = ("fact", "lesson", "preference", "snippet")  # store.memory.KINDS, without importing numpy for --help


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli.py memory", description="Long-term memories of this workspace.")
    parser.add_argument("--db", type=Path, help="memory database (default: WORKSPACE/.agent/memory.db)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON for scripts")
        return p

    p = command("add", "remember a fact, lesson, preference or snippet")
    p.add_argument("text")
    p.add_argument("--kind", choices=KINDS, default="fact")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeat for more)")
    p = command("search", "find memories by meaning and by words")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="how many results (default 5)")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--tag", action="append", default=[], help="only memories with this tag (repeatable)")
    p = command("list", "the most recent memories")
    p.add_argument("-n", type=int, default=20, help="how many (default 20)")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--tag", action="append", default=[])
    p = command("forget", "delete a memory by id")
    p.add_argument("id", type=int)
    p = command("export", "write all memories to a JSON-lines file")
    p.add_argument("file", type=Path)
    p = command("import", "add the memories of a JSON-lines file")
    p.add_argument("file", type=Path)
    p = command("reindex", "rebuild the word and vector indexes from the database")
    p.add_argument("--reembed", action="store_true", help="embed every memory again (after changing the model)")
    command("check", "check the database and whether the vector index is in step")
    return parser


def _rows(memories: Sequence[Any], hits: Sequence[Any] = ()) -> list[dict[str, Any]]:
    now = time.time()
    out = []
    for n, memory in enumerate(memories):
        row = {"id": memory.id, "kind": memory.kind, "tags": list(memory.tags), "age": memory.age(now),
               "created": memory.created, "updated": memory.updated, "text": memory.text}
        if hits:
            row.update(score=hits[n].score, similarity=hits[n].similarity, keyword=hits[n].keyword)
        out.append(row)
    return out


def _table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("kind")
    table.add_column("age", justify="right")
    scored = bool(rows) and "score" in rows[0]
    if scored:
        table.add_column("score", justify="right")
        table.add_column("sim", justify="right")
    table.add_column("tags")
    table.add_column("text", overflow="fold")
    for r in rows:
        cells = [str(r["id"]), r["kind"], r["age"]]
        if scored:
            cells += [f"{r['score']:.2f}", f"{r['similarity']:.2f}"]
        table.add_row(*cells, ",".join(r["tags"]), r["text"])
    Console().print(table)


def _say(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False) if args.json else text)


def run(args: argparse.Namespace, store: "MemoryStore") -> int:
    """Carry out one parsed command on ``store``."""
    if args.command == "add":
        result = store.add(args.text, args.kind, args.tag)
        said = {"added": "stored as", "duplicate": "already stored as", "updated": "updated"}[result.action]
        extra = f" (was: {result.previous_text})" if result.previous_text else ""
        _say(args, {"action": result.action, **_rows([result.memory])[0], "similarity": result.similarity},
             f"{said} #{result.memory.id}{extra}")
    elif args.command in ("search", "list"):
        if args.command == "search":
            hits = store.search(args.query, k=args.k, kind=args.kind, tags=args.tag)
            rows = _rows([h.memory for h in hits], hits)
        else:
            rows = _rows(store.list(n=args.n, kind=args.kind, tag=args.tag))
        if args.json:
            print(json.dumps(rows, ensure_ascii=False))
        elif not rows:
            print("no memories yet" if store.count() == 0 else "no memories match")
        else:
            _table(rows, f"{len(rows)} of {store.count()} memories")
    elif args.command == "forget":
        memory = store.forget(args.id)
        _say(args, {"forgotten": memory.id}, f"forgot #{memory.id}: {memory.text}")
    elif args.command == "export":
        count = store.export(args.file)
        _say(args, {"exported": count, "file": str(args.file)}, f"exported {count} memories to {args.file}")
    elif args.command == "import":
        summary = store.import_(args.file)
        _say(args, {"added": summary.added, "updated": summary.updated, "duplicates": summary.duplicates},
             f"imported {args.file}: {summary.added} added, {summary.updated} updated, "
             f"{summary.duplicates} already there")
    elif args.command == "reindex":
        report = store.reindex(reembed=args.reembed)
        _say(args, {"vectors": report.vectors, "embedded": report.embedded, "seconds": round(report.seconds, 3)},
             f"reindexed {report.vectors} memories ({report.embedded} embedded) in {report.seconds:.2f} s")
    elif args.command == "check":
        found = store.check()
        ok = found["integrity"] == ["ok"] and found["index_in_step"]
        _say(args, found, f"database: {', '.join(found['integrity'])}; {found['memories']} memories, "
                          f"{found['vectors']} vectors, index {'in step' if found['index_in_step'] else 'OUT OF STEP'}")
        return 0 if ok else 1
    return 0


def main(argv: list[str], settings: "Settings", *, embedder: "Embedder | None" = None) -> int:
    """Run ``memory`` with ``argv`` (without the word ``memory``); returns the exit status.

    ``embedder``: one already loaded (the chat's ``/memory``), instead of loading the model again.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage or --help
        return int(exc.code or 0)
    from store.embed import make_embedder
    from store.memory import MemoryStore, default_path

    try:
        store = MemoryStore(args.db or default_path(settings.workspace_root), embedder or make_embedder(settings))
        with store:
            return run(args, store)
    except AgentError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2 if isinstance(exc, FatalError) else 1


if __name__ == "__main__":
    from boot.subcommand import run_subcommand

    run_subcommand(main)
