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
        SlashCommand("clear", "start a new session (the old one stays, /resume brings it back)", _clear),
        SlashCommand("cost", "tokens used in this chat and this session", _cost),
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
        table.add_row(mark + s.id, _ago(s.updated), s.status, str(s.messages), short(s.title, 60))
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


def _model_ids(chat: "Chat") -> list[str]:
    try:
        return list(getattr(chat.agent.gateway, "list_models")())
    except (AgentError, AttributeError):
        return []


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
        chat.console.print(f"this session ({chat.session_id}) in this chat: {usage_line(chat.session_usage)}")
    where = "sent to Google Gemini (billed by Google)" if chat.provider == "gemini" else "computed by your own server"
    chat.console.print(f"every token was {where}", style="dim")


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
