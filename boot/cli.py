"""The command line: flags, subcommands, one task (``-p``) or the interactive chat.

Every setting of :class:`boot.settings.Settings` is also a flag (``--max-steps 5`` for
``AGENT_MAX_STEPS``); flags override the environment. Exit codes are in :mod:`boot.turns` and
documented in ``docts/cli.md``. An expected failure (a bad setting, no model server) is one line
on stderr and exit code 2, never a stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import typing
from typing import Any, Sequence

from boot.settings import Settings, env_name, load_settings
from boot.turns import (CONTINUE_TASK, EXIT_INTERRUPTED, EXIT_USAGE, SENT_TO_GOOGLE, Leave, close_agent, combined,
                        exit_code, outgrew_context, run_turn, switch_provider)
from core.errors import ConfigError, FatalError, ModelUnavailable

#: ``python cli.py NAME …`` runs ``main(argv, settings) -> int`` of the module; add new ones here
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "memory": ("boot.memory_cmd", "search, list and edit what the agent remembers"),
    "skills": ("boot.skills_cmd", "list, show, remove and restore the skills the agent promoted"),
}


def available_subcommands() -> dict[str, tuple[str, str]]:
    """The subcommands (name: (module, one-line help)), all of which ship with the program."""
    return dict(SUBCOMMANDS)

#: seconds the start-up check waits for the model server's /models
SERVER_CHECK_S = 5.0
#: settings only the model server reads (``bash runsv.sh``, ``python -m boot.serve``): no flag here
SERVER_ONLY = frozenset({"model_path", "profile", "backend", "vram_gb", "n_gpu_layers", "threads", "host", "port",
                         "model_aliases", "queue_size", "cors_origins", "allowed_hosts", "hf_endpoint"})


def version() -> str:
    """``local-coder 0.1.0``: the installed package's version."""
    from importlib import metadata

    try:
        return f"local-coder {metadata.version('local-coder')}"
    except metadata.PackageNotFoundError:
        return "local-coder (version unknown: not installed)"


class Parser(argparse.ArgumentParser):
    """argparse that says what was wrong in one line, with the nearest flag, instead of the usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"error: {usage_problem(self, message)}\n")


def usage_problem(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's complaint, with a suggestion for a mistyped flag and where a server setting belongs."""
    import difflib

    known = sorted({opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")})
    if message.startswith("unrecognized arguments: "):
        words = message[len("unrecognized arguments: "):].split()
        flag = next((w.split("=", 1)[0] for w in words if w.startswith("-")), words[0] if words else "")
        name = flag.lstrip("-").replace("-", "_")
        if name in SERVER_ONLY:
            return (f"{flag} is a setting of the model server, not of the agent: give it to `bash runsv.sh` "
                    f"(or set {env_name(name)})")
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        also = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown flag {flag}{also}; python cli.py --help lists them"
    return f"{message}; python cli.py --help lists the flags"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: the CLI's own flags, then one flag per setting the agent reads."""
    commands = available_subcommands()
    parser = Parser(
        prog="python cli.py", allow_abbrev=False,
        description="A local coding agent. Without -p it opens an interactive chat in the workspace.",
        epilog="Subcommands: " + "; ".join(f"{name}: {text}" for name, (_, text) in commands.items())
               + ". Exit codes: 0 done, 1 the run ended without success, 2 bad usage, configuration or no "
               "server, 130 interrupted (docts/cli.md).")
    parser.add_argument("--version", action="version", version=version())
    run = parser.add_argument_group("running")
    run.add_argument("-p", "--prompt", metavar="TASK",
                     help="run one task without the chat and exit ('-' reads the task from stdin)")
    run.add_argument("--resume", action="store_true", help="continue the most recent session of the workspace")
    run.add_argument("--session", metavar="ID", help="continue the session with this id (or unique prefix)")
    run.add_argument("--output-format", choices=("text", "json"), default="text",
                     help="with -p: 'json' prints one JSON object on stdout (status, answer, steps, "
                          "tool calls, usage) and nothing else")
    run.add_argument("--quiet", "-q", action="store_true",
                     help="with -p: no streaming, tool lines or spinner; print only the final answer")
    run.add_argument("--gemini", action="store_true",
                     help="use Google Gemini (GEMINI_API_KEY) instead of the local model server; "
                          "the session's content is sent to Google")
    run.add_argument("--offline", action="store_true", help="turn off the tools that reach the network (fetch)")
    add_setting_flags(parser.add_argument_group("settings (each overrides its environment variable)"))
    parser.add_argument("command", nargs="?", metavar="SUBCOMMAND",
                        help=f"one of: {', '.join(commands)} (with its own arguments, e.g. 'memory --help')")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def add_setting_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per setting the agent reads (:data:`SERVER_ONLY` left out): ``--enable-shell/--no-enable-shell``
    for booleans, a value otherwise."""
    for name, info in Settings.model_fields.items():
        if name in SERVER_ONLY:
            continue
        flag = "--" + name.replace("_", "-")
        text = f"{info.description or name} [{env_name(name)}]".replace("%", "%%")
        if info.annotation is bool:
            group.add_argument(flag, dest=f"setting_{name}", action=argparse.BooleanOptionalAction,
                               default=None, help=text)
            continue
        choices = _literal_choices(info.annotation)
        metavar = "{" + ",".join(choices) + "}" if choices else _metavar(name, info.annotation)
        # values stay strings: pydantic validates them, so a bad one names the setting
        group.add_argument(flag, dest=f"setting_{name}", metavar=metavar, default=None, help=text)


def _metavar(name: str, annotation: Any) -> str:
    if name.endswith("_url") or name.endswith("_endpoint"):
        return "URL"
    if name.endswith("_s"):
        return "SECONDS"
    if name in ("workspace", "model_path"):
        return "PATH"
    if name.endswith("key"):
        return "KEY"
    kinds = set(typing.get_args(annotation)) | {annotation}
    if int in kinds:
        return "N"
    if float in kinds:
        return "NUMBER"
    return "TEXT"


def _literal_choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return []


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags give (flags left out are not overrides)."""
    given = {key[len("setting_"):]: value for key, value in vars(args).items()
             if key.startswith("setting_") and value is not None}
    if args.offline:
        given["enable_fetch"] = False
    return given


# --- start-up checks ---------------------------------------------------------------------------------

def check_server(settings: Settings, timeout_s: float = SERVER_CHECK_S) -> None:
    """Raise a one-line :class:`FatalError` unless an OpenAI-compatible server answers at the model URL."""
    import httpx

    from gate.openai_compat import is_loopback

    url = f"{settings.model_url}/models"
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
    hint = "start one with `bash runsv.sh`, or give --model-url (AGENT_MODEL_URL) for another OpenAI-compatible engine"
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout_s, trust_env=not is_loopback(url))
    except httpx.HTTPError as exc:
        raise ModelUnavailable(f"no model server answers at {settings.model_url}", hint=hint) from None
    if resp.status_code in (401, 403):
        raise ConfigError(f"the model server at {settings.model_url} refused the request ({resp.status_code})",
                          hint="set AGENT_API_KEY (or --api-key) to the key the server expects")
    if resp.status_code >= 400:
        raise ModelUnavailable(f"{url} answered HTTP {resp.status_code}: is this an OpenAI-compatible /v1 address?",
                               hint=hint)


def sandbox_line(settings: Settings) -> str:
    """How code the agent runs will be confined, in one line; a problem starts with ``WARNING``.

    Always a warning when ``AGENT_SANDBOX=off``; empty when no tool runs code.
    """
    if settings.sandbox != "off" and not (settings.enable_shell or settings.enable_pyexe):
        return ""
    try:
        sandbox = importlib.import_module("core.sandbox")
        return str(sandbox.sandbox_status(settings))
    except (ImportError, AttributeError):
        if settings.sandbox == "off":
            return ("WARNING: the sandbox is OFF (AGENT_SANDBOX=off): commands and Python the agent runs "
                    "are not confined to the workspace")
        return ""


def prepare_workspace(settings: Settings, *, quiet: bool = False) -> None:
    """Say where the agent works when it may surprise (a missing folder, a project left aside); keep its state out of git."""
    from pathlib import Path

    from boot.settings import PROJECT_ROOT
    from boot.workspace import keep_out_of_git, workspace_notes

    root = settings.workspace_root
    if settings.sandbox != "off":  # before anything is made there: the file tools could rewrite the agent too
        from core.sandbox import workspace_problem

        problem = workspace_problem(root)
        if problem:
            raise ConfigError(problem, hint="point --workspace (AGENT_WORKSPACE) at a project folder of its own, "
                                            "e.g. a copy of the code to work on")
    notes = workspace_notes(root, given="workspace" in settings.model_fields_set, cwd=Path.cwd(),
                            agent_home=PROJECT_ROOT)
    for note in notes:
        if not quiet or "does not exist" in note:
            print(f"note: {note}", file=sys.stderr)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the workspace {root}: {exc.strerror or exc}",
                          hint="give --workspace (AGENT_WORKSPACE) a folder you can write") from None
    keep_out_of_git(root)


def logging_setup(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


# --- sessions ------------------------------------------------------------------------------------------

def find_session(store: Any, wanted: str) -> str:
    """The id of the session named by ``wanted``: an exact id or a unique prefix."""
    from store.sessions import SessionNotFound

    wanted = wanted.strip()
    try:
        return store.info(wanted).id
    except SessionNotFound:
        pass
    matches = [s.id for s in store.list(limit=10_000) if s.id.startswith(wanted)] if wanted else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"{len(matches)} sessions start with {wanted!r}", hint="give more of the id")
    raise ConfigError(f"no session {wanted!r} in this workspace", hint="list them with /sessions in the chat")


def chosen_session(store: Any, args: argparse.Namespace) -> str | None:
    """The session ``--session`` / ``--resume`` asks to continue, or ``None`` for a new one."""
    if args.session:
        return find_session(store, args.session)
    if args.resume:
        return store.latest()
    return None


def make_agent(settings: Settings, events: Any, *, gemini: bool) -> Any:
    """The agent for this run: on Gemini only when asked, else the local server (checked first)."""
    from boot.wiring import build_agent

    if gemini:
        from gate.factory import make_gateway

        return build_agent(settings, gateway=make_gateway(settings, "gemini"), events=events)
    check_server(settings)
    return build_agent(settings, events=events)


# --- one task ------------------------------------------------------------------------------------------

def read_task(args: argparse.Namespace) -> str | None:
    """The task from ``-p`` (``-`` or a non-terminal stdin: read stdin), or ``None`` for the chat."""
    if args.prompt is not None and args.prompt != "-":
        return args.prompt
    if args.prompt == "-" or not sys.stdin.isatty():
        if sys.stdin.isatty():
            print("reading the task from stdin; end it with Ctrl-D", file=sys.stderr)
        text = sys.stdin.read()
        if not text.strip():
            raise ConfigError("no task: stdin was empty", hint="pipe the task in, or give it with -p \"…\"")
        return text
    return None


def run_once(settings: Settings, args: argparse.Namespace, task: str) -> int:
    """``-p``: one task, streamed (or one JSON object), exit code from how it ended."""
    from boot.screen import PlainScreen, one_line

    as_json = args.output_format == "json"
    screen = PlainScreen(sys.stdout, sys.stderr, stream=not (args.quiet or as_json), progress=not args.quiet,
                         spinner=sys.stderr.isatty())
    agent = make_agent(settings, screen, gemini=args.gemini)
    try:
        if args.gemini and not args.quiet:
            print(f"note: this task runs on Google Gemini ({settings.gemini_model}); {SENT_TO_GOOGLE}",
                  file=sys.stderr)
        session_id = chosen_session(agent.sessions, args)
        if args.resume and session_id is None and not args.quiet:
            print("note: no earlier session in this workspace; starting a new one", file=sys.stderr)

        def interrupted() -> None:
            if not args.quiet:
                print("\ninterrupting… (Ctrl-C again to leave at once)", file=sys.stderr)

        result = run_turn(agent, task, session_id=session_id, on_interrupt=interrupted)
        if outgrew_context(result) and not args.gemini and fallback_to_gemini(settings, args, result, screen):
            switch_provider(agent, settings, "gemini")
            result = combined(result, run_turn(agent, CONTINUE_TASK, session_id=result.session_id,
                                               on_interrupt=interrupted))
    finally:
        screen.close()
        close_agent(agent)
    if as_json:
        if not args.quiet:
            screen.finish(result, answer=False)  # why it stopped, on stderr
        report = result.to_json()
        report["reason"] = one_line(result.reason)
        screen.write_out(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        screen.finish(result, answer=args.quiet)
    if result.status == "checks_failed" and not args.quiet:
        tail = check_tail(agent)
        if tail:
            print(tail, file=sys.stderr)
    return exit_code(result.status)


def check_tail(agent: Any) -> str:
    """The last lines of the judge's last check, indented, for the person (empty when none ran)."""
    from boot.wiring import last_check

    last = last_check(agent)
    if last is None or not last.output.strip():
        return ""
    return "the last check's output ends:\n" + "\n".join("  " + line for line in last.tail().splitlines())


def fallback_to_gemini(settings: Settings, args: argparse.Namespace, result: Any, screen: Any) -> bool:
    """``-p``: whether a task that outgrew the local context goes on with Gemini (``AGENT_FALLBACK``).

    ``never``: no. No key: one line saying how to set it. ``gemini``: yes, saying so. ``ask``: a
    question on a terminal; without one, a line saying how to continue, and no.
    """
    if settings.fallback == "never":
        return False
    if settings.gemini_api_key is None or not settings.gemini_api_key.get_secret_value().strip():
        print("note: this task no longer fits the local model's context; to continue it on Google Gemini, set "
              "GEMINI_API_KEY (https://aistudio.google.com/apikey) and run: python cli.py --resume --gemini -p "
              "\"continue\"", file=sys.stderr)
        return False
    screen.close()  # no spinner over the question
    if settings.fallback == "gemini":
        print(f"note: continuing this session on Google Gemini ({settings.gemini_model}) as AGENT_FALLBACK=gemini "
              f"says; {SENT_TO_GOOGLE}", file=sys.stderr)
        return True
    reads_task = args.prompt == "-" or args.prompt is None
    if reads_task or not sys.stdin.isatty() or args.quiet or args.output_format == "json":
        print(f"note: this task no longer fits the local model's context; to continue the session on Google Gemini "
              f"({SENT_TO_GOOGLE}): python cli.py --resume --gemini -p \"continue\"", file=sys.stderr)
        return False
    sys.stderr.write(f"This task no longer fits the local model's context. Continue this session on Google Gemini "
                     f"({settings.gemini_model})? {SENT_TO_GOOGLE[0].upper()}{SENT_TO_GOOGLE[1:]}. [yes/no] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


# --- entry -------------------------------------------------------------------------------------------

def run_subcommand(name: str, argv: list[str], settings: Settings) -> int:
    module_name, _ = available_subcommands()[name]
    module = importlib.import_module(module_name)
    return int(module.main(argv, settings) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (without the program name); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already explained
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    commands = available_subcommands()
    if args.command is not None and args.command not in commands:
        task = json.dumps(" ".join([args.command, *args.args]), ensure_ascii=False)
        print(f"error: unknown command {args.command!r} (commands: {', '.join(commands) or 'none'}); "
              f"to give the agent a task, use -p {task}", file=sys.stderr)
        return EXIT_USAGE
    for name in ("api_key", "gemini_api_key"):  # a key in argv is seen by every user through `ps`
        if getattr(args, f"setting_{name}", None) is not None:
            print(f"warning: --{name.replace('_', '-')} puts the key on the command line, where `ps` shows it to "
                  f"every user of this machine and your shell history keeps it; set {env_name(name)} in the "
                  "environment or in .env instead", file=sys.stderr)
    try:
        settings = load_settings(**setting_overrides(args))
        logging_setup(settings)
        if args.command is not None:
            return run_subcommand(args.command, list(args.args), settings)
        sandbox = sandbox_line(settings)
        if sandbox.startswith("WARNING"):
            print(sandbox, file=sys.stderr)  # on every start, --quiet or not: the person must know
        prepare_workspace(settings, quiet=args.quiet)
        task = read_task(args)
        if task is not None:
            return run_once(settings, args, task)
        if args.output_format == "json" or args.quiet:
            raise ConfigError("--output-format json and --quiet need a task", hint="give it with -p \"…\" or on stdin")
        from boot.chat import run_chat

        return run_chat(settings, gemini=args.gemini, session=args.session, resume=args.resume)
    except FatalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Leave):
        print("", file=sys.stderr)
        return EXIT_INTERRUPTED
