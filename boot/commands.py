"""The chat's slash commands: one table, so a new command is one entry in :func:`builtin_commands`.

A command gets the :class:`boot.chat.Chat` and the text after its name. It prints through
``chat.console`` and changes the chat through its methods; :class:`Quit` leaves the chat.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from boot.screen import short, tokens, usage_line
from core.errors import AgentError

if TYPE_CHECKING:
    from boot.chat import Chat


#: the first words ``/memory`` hands to the memory commands as they are; anything else is a search
MEMORY_SUBCOMMANDS = ("add", "search", "list", "forget", "export", "import", "reindex", "check")
#: what ``/skills`` hands to the skills commands
SKILLS_SUBCOMMANDS = ("list", "show", "remove", "restore")


class Quit(Exception):
    """Leave the chat (exit code 0)."""


@dataclass(frozen=True)
class SlashCommand:
    """``/name ARGS``: what it does in one line, the handler, and what to complete after it."""

    name: str
    summary: str
    handler: Callable[["Chat", str], None]
    usage: str = ""  # the arguments, as shown by /help ("[ID]")
    complete: Callable[["Chat"], Iterable[str]] | None = None
    aliases: tuple[str, ...] = ()


def builtin_commands() -> list[SlashCommand]:
    """The chat's commands, in the order /help lists them (a fresh list each call)."""
    return [
        SlashCommand("help", "show the commands", _help, aliases=("?",)),
        SlashCommand("sessions", "list this workspace's sessions", _sessions),
        SlashCommand("resume", "continue a session (the previous one without an ID)", _resume, "[ID]",
                     complete=lambda chat: [s.id for s in chat.agent.sessions.list(limit=50)]),
        SlashCommand("model", "show the model and context, or switch to another model id", _model, "[ID]",
                     complete=_model_ids),
        SlashCommand("gemini", "continue this session on Google Gemini (its content is then sent to Google)",
                     _gemini),
        SlashCommand("local", "continue this session on the local model server", _local),
        SlashCommand("plan", "the session's plan as a checklist", _plan),
        SlashCommand("compact", "summarise all but the latest exchanges of the session now, to make room",
                     _compact),
        SlashCommand("clear", "start a new session (the old one stays, /resume brings it back)", _clear),
        SlashCommand("cost", "tokens used in this chat and this session, and by which provider", _cost),
        SlashCommand("skills", "the skills the agent promoted: /skills, /skills show|remove NAME, "
                     "/skills restore NAME@V", _skills, "[ARGS]", complete=lambda chat: list(SKILLS_SUBCOMMANDS)),
        SlashCommand("memory", "what the agent remembers: /memory WORDS searches, /memory list, /memory --help",
                     _memory, "[ARGS]", complete=lambda chat: list(MEMORY_SUBCOMMANDS)),
        SlashCommand("quit", "leave (Ctrl-D at the empty prompt does too)", _quit, aliases=("exit",)),
    ]


# --- handlers ------------------------------------------------------------------------------------

def _help(chat: "Chat", arg: str) -> None:
    from rich.table import Table

    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    for cmd in chat.commands():
        table.add_row(f"/{cmd.name} {cmd.usage}".rstrip(), cmd.summary)
    chat.console.print(table)
    chat.console.print("Type a task to give it to the agent. Ctrl-C stops the running turn; "
                       "Ctrl-C twice, or Ctrl-D at the empty prompt, leaves.", style="dim")


def _ago(when: float) -> str:
    s = max(0.0, time.time() - when)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return "just now"


def _sessions(chat: "Chat", arg: str) -> None:
    from rich.table import Table

    found = chat.agent.sessions.list(limit=20)
    if not found:
        chat.console.print("No sessions in this workspace yet.")
        return
    table = Table(box=None, padding=(0, 2, 0, 0))
    for column in ("id", "updated", "status", "messages", "title"):
        table.add_column(column, no_wrap=column != "title")
    for s in found:
        mark = "*" if s.id == chat.session_id else " "
        table.add_row(mark + s.id, _ago(s.updated), s.label, str(s.messages), short(s.title, 60))
    chat.console.print(table)
    chat.console.print("/resume ID continues one (* marks the current session)", style="dim")


def _resume(chat: "Chat", arg: str) -> None:
    from boot.cli import find_session

    if arg.strip():
        sid = find_session(chat.agent.sessions, arg)
    else:
        others = [s.id for s in chat.agent.sessions.list(limit=2) if s.id != chat.session_id]
        if not others:
            chat.console.print("No other session to resume.")
            return
        sid = others[0]
    chat.switch_session(sid)


#: words in the ids of embedding models, which a server lists beside its chat models but cannot chat
EMBEDDING_WORDS = ("embed", "minilm", "bge-", "e5-", "gte-", "sentence-transformers")


def _model_ids(chat: "Chat") -> list[str]:
    """The chat models the server lists (its embedding model left out: it cannot chat)."""
    try:
        listed = list(getattr(chat.agent.gateway, "list_models")())
    except (AgentError, AttributeError):
        return []
    embedding = _embedding_model(chat)
    return [m for m in listed if m != embedding and not any(w in m.lower() for w in EMBEDDING_WORDS)]


def _embedding_model(chat: "Chat") -> str | None:
    """The embedding model this project's server names in ``/health`` (``None`` for other servers)."""
    import httpx

    root = getattr(chat.agent.gateway, "root_url", None)
    if not root:
        return None
    try:
        health = httpx.get(f"{root}/health", timeout=2.0, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        return None
    return health.get("embedding_model") if isinstance(health, dict) else None


def _model(chat: "Chat", arg: str) -> None:
    if arg.strip():
        chat.switch_model(arg.strip())
        return
    used, size = chat.screen.context_used, chat.screen.context_size
    if size is None:
        size = chat.agent.context.context_length
    chat.console.print(f"model {chat.model_name()} ({chat.provider_line()})")
    chat.console.print(f"context window {tokens(size)} tokens; last request used {tokens(used)}")
    listed = _model_ids(chat)
    if len(listed) > 1:
        chat.console.print("the server also offers: " + ", ".join(m for m in listed if m != chat.model_name()),
                           style="dim")


def _clear(chat: "Chat", arg: str) -> None:
    chat.new_session()


def _cost(chat: "Chat", arg: str) -> None:
    chat.console.print(f"this chat: {usage_line(chat.chat_usage)} = {tokens(chat.chat_usage.total_tokens)} tokens "
                       f"over {chat.turns} turn(s), {chat.tool_calls} tool call(s)")
    if chat.session_id:
        total = chat.session_usage.total_tokens
        chat.console.print(f"this session ({chat.session_id}) in this chat: {usage_line(chat.session_usage)} = "
                           f"{tokens(total)} tokens")
    where = {"gemini": f"Google Gemini {chat.settings.gemini_model} (sent to Google, billed by Google)",
             "local": f"local {chat.settings.model_url} (computed by your own server)"}
    for provider, used in chat.provider_usage.items():
        chat.console.print(f"  {where.get(provider, provider)}: {usage_line(used)}", style="dim")
    chat.console.print(f"now on {chat.provider_name()}: {chat.model_name()}", style="dim")


def _gemini(chat: "Chat", arg: str) -> None:
    chat.use_provider("gemini")


def _local(chat: "Chat", arg: str) -> None:
    chat.use_provider("local")


def _plan(chat: "Chat", arg: str) -> None:
    from rich.text import Text

    from boot.wiring import plan_checklist

    if not chat.session_id:
        chat.console.print("No session yet: the plan appears once the agent keeps one for a task.")
        return
    chat.console.print(Text.from_markup(plan_checklist(chat.agent, chat.session_id, markup=True)))


def _compact(chat: "Chat", arg: str) -> None:
    from boot.wiring import compact_session

    if not chat.session_id:
        chat.console.print("No session yet: nothing to compact.")
        return
    count = compact_session(chat.agent, chat.session_id)
    if count:
        chat.console.print(f"compacted: {count} older messages are now one summary; the latest exchanges stay as "
                           "they were")
    else:
        chat.console.print("nothing to compact yet: the session is only its latest exchanges")


def _skills(chat: "Chat", arg: str) -> None:
    from rich.console import Console

    try:
        from boot.skills_cmd import main as skills_main, skills_table
    except ImportError as exc:
        chat.console.print(f"error: the skills commands cannot be loaded ({exc})", style="red")
        return
    try:
        argv = shlex.split(arg)
    except ValueError as exc:
        chat.console.print(f"error: {exc} (quote arguments with spaces)", style="red")
        return
    if not argv or argv == ["list"]:
        chat.console.print(skills_table(chat.settings), markup=True)
        return
    if argv[0] not in SKILLS_SUBCOMMANDS and not argv[0].startswith("-"):
        chat.console.print(f"unknown /skills command {argv[0]!r}: use /skills, /skills show NAME, /skills remove NAME "
                           "or /skills restore NAME@VERSION", style="red")
        return
    # the skills commands write rich markup; the chat's console shows text as written
    console = Console(file=chat.console.file, highlight=False, width=chat.console.width)
    try:
        skills_main(argv, chat.settings, console=console)
    except SystemExit:  # its argparse printed the usage or the error already
        pass


def _memory(chat: "Chat", arg: str) -> None:
    try:
        from boot.memory_cmd import main as memory_main
    except ImportError as exc:
        chat.console.print(f"error: the memory commands cannot be loaded ({exc})", style="red")
        return
    try:
        argv = shlex.split(arg)
    except ValueError as exc:
        chat.console.print(f"error: {exc} (quote arguments with spaces)", style="red")
        return
    if not argv:
        argv = ["list"]
    elif argv[0] not in MEMORY_SUBCOMMANDS and not argv[0].startswith("-"):
        argv = ["search", arg.strip()]
    try:
        memory_main(argv, chat.settings)
    except SystemExit:  # its argparse printed the usage or the error already
        pass


def _quit(chat: "Chat", arg: str) -> None:
    raise Quit()
