"""The interactive chat: a prompt with history and slash-command completion, rich output, Ctrl-C.

Each line the person types is a task for the agent, run as one turn of the current session, or
a slash command from :mod:`boot.commands`. Ctrl-C while a turn runs ends that turn (status
``interrupted``; the session stays consistent and the next task continues it); a second
Ctrl-C leaves. At the prompt, Ctrl-C clears a half-typed line; at the empty prompt it asks for
a second Ctrl-C before leaving, as shells do; Ctrl-D or ``/quit`` leaves at once.

A message that will take the server minutes to read (estimated from its size and the prompt speed
measured so far) is shown with that estimate first, and sent only when the person says so.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings
from rich.console import Console
from rich.text import Text

from boot.commands import Quit, SlashCommand, builtin_commands
from boot.screen import ChatScreen, end_line, short, status_fields
from boot.settings import Settings
from boot.turns import (CONTINUE_TASK, EXIT_INTERRUPTED, EXIT_OK, SENT_TO_GOOGLE, Leave, close_agent, outgrew_context,
                        run_turn, switch_provider)
from core.errors import FatalError
from core.messages import Usage

PROMPT = "› "
#: messages of a resumed session shown again
RECAP_MESSAGES = 6
#: a message the server will take longer than this to read is confirmed first
SLOW_PROMPT_S = 60.0
#: with no speed measured yet, a message this long (tokens) gets a note that it may take a while
LONG_PROMPT_TOKENS = 4000


class Chat:
    """One chat: the agent, the current session, this chat's token totals, the command table."""

    def __init__(self, settings: Settings, console: Any, *, gemini: bool = False,
                 commands: Iterable[SlashCommand] | None = None) -> None:
        from boot.cli import make_agent

        self.settings = settings
        self.console = console
        self.screen = ChatScreen(console)
        self.provider = "gemini" if gemini else "local"
        self.agent = make_agent(settings, self.screen, gemini=gemini)
        self.session_id: str | None = None
        self.chat_usage = Usage()
        self.session_usage = Usage()
        self.provider_usage: dict[str, Usage] = {}  # this chat's tokens by provider
        self.turns = 0
        self.tool_calls = 0
        self.told_google = False  # the person was told once that the session goes to Google
        self.leave_armed = False  # Ctrl-C was pressed once at the empty prompt
        self._commands: dict[str, SlashCommand] = {}
        for cmd in (builtin_commands() if commands is None else commands):
            self.add_command(cmd)

    # --- the command table ------------------------------------------------------------------------

    def add_command(self, cmd: SlashCommand) -> None:
        """Add (or replace) a slash command."""
        for name in (cmd.name, *cmd.aliases):
            self._commands[name] = cmd

    def commands(self) -> list[SlashCommand]:
        """Each command once, in the order they were added."""
        seen: dict[str, SlashCommand] = {}
        for cmd in self._commands.values():
            seen.setdefault(cmd.name, cmd)
        return list(seen.values())

    def command(self, name: str) -> SlashCommand | None:
        return self._commands.get(name)

    def dispatch(self, line: str) -> None:
        """Run ``/name args``; an unknown name is one line saying so."""
        name, _, arg = line[1:].partition(" ")
        cmd = self.command(name or "help")
        if cmd is None:
            close = difflib.get_close_matches(name, [c.name for c in self.commands()], n=2, cutoff=0.6)
            also = f" (did you mean {', '.join('/' + c for c in close)}?)" if close else ""
            self.console.print(f"unknown command /{name}{also}; /help lists them", style="red")
            return
        try:
            cmd.handler(self, arg.strip())
        except FatalError as exc:
            self.console.print(f"error: {exc}", style="red")

    # --- what the commands change ----------------------------------------------------------------

    def model_name(self) -> str:
        try:
            return str(self.agent.gateway.model)
        except FatalError:
            return self.settings.model or "?"

    def provider_name(self) -> str:
        return "Google Gemini" if self.provider == "gemini" else "local"

    def provider_line(self) -> str:
        if self.provider == "gemini":
            return f"Google Gemini at {self.settings.gemini_base_url}"
        return f"at {self.settings.model_url}"

    def new_session(self) -> None:
        """The next task starts a new session."""
        self.session_id = None
        self.session_usage = Usage()
        self.console.clear()
        self.console.print("New session: the next task starts fresh (/resume brings the last one back).")

    def switch_session(self, session_id: str) -> None:
        """Continue ``session_id`` with the next task; show where it left off."""
        store = self.agent.sessions
        info = store.info(session_id)
        self.session_id = session_id
        self.session_usage = Usage()
        self.console.print(f"Resumed session {info.id}: {short(info.title, 70)} "
                           f"({info.messages} messages, last run: {info.label})", style="bold")
        shown = [m for m in store.messages(session_id) if m.role in ("user", "assistant") and m.content.strip()]
        for m in shown[-RECAP_MESSAGES:]:
            who = Text("you  ", style="cyan") if m.role == "user" else Text("agent ", style="green")
            self.console.print(who + Text(short(m.content, 200), style="dim"))

    def switch_model(self, model: str) -> None:
        """Continue with another model id of the same server (the session carries over)."""
        if self.provider != "local":
            self.console.print("/model ID switches local models; this chat uses Gemini "
                               "(set GEMINI_MODEL to choose another)", style="red")
            return
        from gate.factory import make_gateway

        self.settings = self.settings.model_copy(update={"model": model})
        gateway = make_gateway(self.settings, "local")
        listed: list[str] = []
        try:
            listed = list(gateway.list_models())
        except FatalError:
            pass
        old = self.agent.gateway
        self.agent.use_gateway(gateway)
        close = getattr(old, "close", None)
        if callable(close):
            close()  # its connection pool; the new gateway has its own
        self.console.print(f"model is now {model}")
        if listed and model not in listed:
            self.console.print(f"note: the server lists {', '.join(listed)}; it may not know {model!r}",
                               style="yellow")

    def use_provider(self, provider: str, *, why: str = "") -> bool:
        """Continue the same session on ``provider`` (``local`` or ``gemini``); ``False``: nothing changed."""
        if provider == self.provider:
            self.console.print(f"already on {self.provider_name()}: {self.model_name()} {self.provider_line()}")
            return True
        try:
            switch_provider(self.agent, self.settings, provider)
        except FatalError as exc:
            self.console.print(f"error: {exc}", style="red")
            return False
        self.provider = provider
        self.screen.context_used, self.screen.context_size = 0, None
        self.console.print(f"now on {self.provider_name()}: {self.model_name()} {self.provider_line()}"
                           + (f" ({why})" if why else ""), style="bold")
        if provider == "gemini":
            self.tell_google()
        elif self.session_id:
            self.console.print("the session goes on with the local model", style="dim")
        return True

    def tell_google(self) -> None:
        """Say, once per chat, that the session now goes to Google."""
        if not self.told_google:
            self.told_google = True
            self.console.print(f"Note: from now on {SENT_TO_GOOGLE}; /local switches back.", style="yellow")

    # --- turns -----------------------------------------------------------------------------------

    def ask(self, task: str) -> None:
        """Give ``task`` to the agent as the next turn of the current session."""
        def interrupted() -> None:
            self.console.print("interrupting… (Ctrl-C again to leave)", style="yellow")

        self.screen.begin()
        try:
            result = run_turn(self.agent, task, session_id=self.session_id, on_interrupt=interrupted)
        except FatalError as exc:
            self.screen.end()
            self.console.print(f"error: {exc}", style="red")
            return
        except BaseException:
            self.screen.end()
            raise
        self.screen.end()
        if result.session_id != self.session_id:
            self.session_usage = Usage()
        self.session_id = result.session_id
        self.turns += 1
        self.tool_calls += len(result.tool_calls)
        self.chat_usage = self.chat_usage + result.usage
        self.session_usage = self.session_usage + result.usage
        self.provider_usage[self.provider] = self.provider_usage.get(self.provider, Usage()) + result.usage
        if not result.ok:
            self.console.print(end_line(result), style="yellow")
        if result.status == "checks_failed":
            from boot.cli import check_tail

            tail = check_tail(self.agent)
            if tail:
                self.console.print(tail, style="dim")
        self.console.print(self.status_line(), style="dim")
        if outgrew_context(result) and self.provider == "local" and self.offer_gemini():
            self.ask(CONTINUE_TASK)

    def offer_gemini(self) -> bool:
        """A local task outgrew the context: move the session to Gemini if ``AGENT_FALLBACK`` and the person agree."""
        fallback = self.settings.fallback
        if fallback == "never":
            return False
        key = self.settings.gemini_api_key
        if key is None or not key.get_secret_value().strip():
            self.console.print("This task no longer fits the local model's context. To continue it on Google Gemini, "
                               "set GEMINI_API_KEY (https://aistudio.google.com/apikey) in .env, restart, and type "
                               "/gemini.", style="yellow")
            return False
        if fallback == "gemini":
            self.console.print(f"This task no longer fits the local model's context: continuing this session on "
                               f"Google Gemini, as AGENT_FALLBACK=gemini says.", style="yellow")
            return self.use_provider("gemini", why="AGENT_FALLBACK=gemini")
        question = (f"This task no longer fits the local model's context. Continue this session on Google Gemini "
                    f"({self.settings.gemini_model})? {SENT_TO_GOOGLE[0].upper()}{SENT_TO_GOOGLE[1:]}. [yes/no] ")
        try:
            answer = self.confirm(question)
        except (KeyboardInterrupt, EOFError):
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            self.console.print("Staying on the local model; /gemini moves the session later, /compact makes room.",
                               style="dim")
            return False
        self.told_google = True  # the question said it
        return self.use_provider("gemini", why="you said yes")

    def worth_sending(self, task: str) -> bool:
        """Whether to send ``task``: one that will take the server minutes to read is confirmed first."""
        from core.tokens import CHARS_PER_TOKEN

        if self.provider != "local":
            return True  # the speed measured is the local server's
        count = int(len(task) / CHARS_PER_TOKEN)
        wait = self.screen.speed.estimate_s(count)
        if wait is None:
            if count >= LONG_PROMPT_TOKENS:
                self.console.print(f"note: this message is about {count:,} tokens; a local model may take minutes "
                                   f"to read it (its progress is shown)", style="yellow")
            return True
        if wait < SLOW_PROMPT_S:
            return True
        speed = self.screen.speed.tokens_per_s or 0
        question = (f"This message is about {count:,} tokens: at the {speed:,.0f} tokens/s the server has read "
                    f"prompts so far, it will take about {minutes(wait)} before the answer starts. Send it? [Y/n] ")
        try:
            answer = self.confirm(question)
        except (KeyboardInterrupt, EOFError):
            answer = "n"
        if answer.strip().lower() in ("", "y", "yes"):
            return True
        self.console.print("not sent; shorten it (the part that matters, or a file the agent can read) and "
                           "send it again", style="dim")
        return False

    def confirm(self, question: str) -> str:
        """Ask the person a question at the prompt; their answer."""
        from prompt_toolkit import prompt

        return prompt(question)

    def status_line(self) -> str:
        where = "Gemini" if self.provider == "gemini" else "local"
        return status_fields(f"{where} {self.model_name()}", self.screen.context_used, self.screen.context_size,
                             self.session_usage)

    def banner(self) -> None:
        self.console.print(Text("local-coder", style="bold") + Text(f" · {self.model_name()} {self.provider_line()}"))
        from boot.cli import sandbox_line

        if self.provider == "gemini":
            self.tell_google()
        sandbox = sandbox_line(self.settings)
        if sandbox and not sandbox.startswith("WARNING"):  # a warning was printed before the chat started
            self.console.print(sandbox, style="dim")
        self.console.print(f"workspace {self.settings.workspace_root} · /help for commands · Ctrl-D leaves",
                           style="dim")

    # --- the prompt --------------------------------------------------------------------------------

    def loop(self) -> int:
        """Read lines until the person leaves; returns the exit code."""
        session = self._prompt_session()
        while True:
            try:
                line = session.prompt(PROMPT)
            except KeyboardInterrupt:  # only at the empty prompt (see the key binding)
                if self.leave_armed:
                    return EXIT_OK
                self.leave_armed = True
                self.console.print("(Ctrl-C again to leave, or Ctrl-D)", style="dim")
                continue
            except EOFError:
                return EXIT_OK
            self.leave_armed = False
            line = line.strip()
            if not line:
                continue
            if is_command(line):
                try:
                    self.dispatch(line)
                except Quit:
                    return EXIT_OK
                except KeyboardInterrupt:  # a slow command (a memory search loading its model)
                    self.console.print("command interrupted", style="yellow")
                continue
            if not self.worth_sending(line):
                continue
            try:
                self.ask(line)
            except (Leave, KeyboardInterrupt):
                return EXIT_INTERRUPTED

    def _prompt_session(self) -> Any:
        history = self.settings.workspace_root / ".agent" / "history"
        history.parent.mkdir(parents=True, exist_ok=True)
        keys = KeyBindings()

        @keys.add("c-c")
        def _(event: Any) -> None:
            # Ctrl-C clears a half-typed line; at the empty prompt it asks for a second one
            if event.current_buffer.text:
                event.current_buffer.reset()
                self.leave_armed = False
            else:
                event.app.exit(exception=KeyboardInterrupt())

        return PromptSession(history=FileHistory(str(history)), completer=SlashCompleter(self),
                             complete_while_typing=True, key_bindings=keys)


def minutes(seconds: float) -> str:
    """90 → ``2 minutes``; 40 → ``1 minute``."""
    n = max(1, round(seconds / 60))
    return f"{n} minute{'s' if n != 1 else ''}"


def is_command(line: str) -> bool:
    """``/name …`` is a command; ``/usr/bin/python crashes`` is a task that starts with a path."""
    if not line.startswith("/"):
        return False
    if not line[1:].strip():
        return True  # a lone "/": /help is what was wanted
    word = line[1:].split(maxsplit=1)[0]
    return word == "?" or (word.replace("-", "").isalpha() and word.isascii())


class SlashCompleter(Completer):
    """Completes ``/names`` (with their summaries) and, after a name, that command's arguments."""

    def __init__(self, chat: Chat) -> None:
        self.chat = chat

    def get_completions(self, document: Any, complete_event: Any) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/"):
            return
        if " " not in text:
            for cmd in self.chat.commands():
                if ("/" + cmd.name).startswith(text):
                    yield Completion("/" + cmd.name, start_position=-len(text), display_meta=cmd.summary)
            return
        name, _, arg = text[1:].partition(" ")
        cmd = self.chat.command(name)
        if cmd is None or cmd.complete is None or " " in arg:
            return
        try:
            candidates = list(cmd.complete(self.chat))
        except FatalError:
            return
        for candidate in candidates:
            if candidate.startswith(arg):
                yield Completion(candidate, start_position=-len(arg))


def run_chat(settings: Settings, *, gemini: bool = False, session: str | None = None, resume: bool = False) -> int:
    """The interactive chat; returns the exit code (raises :class:`FatalError` when it cannot start)."""
    from boot.cli import find_session

    # markup off: titles, answers, file names and errors are shown as written, brackets and all
    console = Console(highlight=False, markup=False)
    chat = Chat(settings, console, gemini=gemini)
    try:
        chat.banner()
        if session:
            chat.switch_session(find_session(chat.agent.sessions, session))
        elif resume:
            latest = chat.agent.sessions.latest()
            if latest is None:
                console.print("No earlier session in this workspace; starting a new one.")
            else:
                chat.switch_session(latest)
        return chat.loop()
    finally:
        close_agent(chat.agent)
