"""The ``shell`` tool: one command in the workspace, confined by ``core.sandbox``.

The sandbox is what protects. The short deny-list below is a courtesy that turns a few clearly
destructive commands into a readable refusal instead of a run; it parses the command with
:mod:`shlex` (so ``rm -fr /``, ``rm -r -f /`` and ``sudo rm -rf --no-preserve-root /`` are all
seen as what they are) and is not meant to be complete.
"""

from __future__ import annotations

import re
import shlex
import threading
from typing import Any

from core import sandbox
from core.errors import SandboxError, ToolError
from core.paths import resolve_in_workspace
from core.tools import Tool, ToolResult, object_schema

#: words that run the rest of the line as a command
_PREFIXES = {"sudo", "doas", "command", "exec", "nice", "nohup", "time", "env", "builtin", "busybox", "xargs"}
#: options of those words that take a value (``sudo -u root``, ``nice -n 5``, ``env -u VAR``)
_PREFIX_OPTIONS_WITH_VALUE = {"-u", "-g", "-n", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "-S"}
_SEPARATORS = {";", "&&", "||", "|", "&", "\n", "(", ")", "|&", ";;"}
_ROOTISH = {"/", "/*", "/.", "/..", "//", "~", "~/", "~/*", "$HOME", "${HOME}", "$HOME/", "$HOME/*"}
_FORK_BOMB = re.compile(r"(?P<f>[\w:.]+)\s*\(\)\s*\{[^}]*(?P=f)\s*\|\s*(?P=f)\s*&")
_DISK_DEVICE = re.compile(r"^/dev/(sd|hd|vd|xvd|nvme|mmcblk|disk|md|dm-|loop)")


def _simple_commands(command: str) -> list[list[str]]:
    """The command split into simple commands (lists of words), on ``;``, ``&&``, ``|``, newlines…"""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in _SEPARATORS or set(token) <= set(";&|()\n"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _strip_prefixes(words: list[str]) -> list[str]:
    """The words from the real command on: ``VAR=x``, ``sudo -u me``, ``nice -n 5``… taken off."""
    i = 0
    after_prefix = False
    while i < len(words):
        word = words[i]
        if "=" in word and not word.startswith("-") and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
            i += 1  # VAR=value before the command
        elif word.rsplit("/", 1)[-1] in _PREFIXES:
            i += 1
            after_prefix = True
        elif after_prefix and word.startswith("-"):
            i += 2 if word in _PREFIX_OPTIONS_WITH_VALUE else 1
        else:
            break
    return words[i:]


def _short_flags(words: list[str]) -> set[str]:
    flags: set[str] = set()
    for w in words:
        if w.startswith("--"):
            flags.add(w)
        elif w.startswith("-") and len(w) > 1:
            flags.update("-" + c for c in w[1:])
    return flags


def refusal(command: str) -> str | None:
    """Why ``command`` is refused as clearly destructive, or ``None``."""
    if _FORK_BOMB.search(command):
        return "it looks like a fork bomb"
    try:
        commands = _simple_commands(command)
    except ValueError:
        return None  # unbalanced quotes: let the shell report it
    for raw in commands:
        words = _strip_prefixes(raw)
        if not words:
            continue
        prog = words[0].rsplit("/", 1)[-1]
        args = words[1:]
        operands = [a for a in args if not a.startswith("-")]
        flags = _short_flags(args)
        if prog == "rm" and (flags & {"-r", "-R", "--recursive"}) and (
                any(o.rstrip("/") in ("", "~", "$HOME", "${HOME}") or o in _ROOTISH for o in operands)
                or "--no-preserve-root" in flags):
            return "it deletes the whole filesystem or home folder (rm -r on / or ~)"
        if prog.startswith("mkfs") or prog in ("mke2fs", "wipefs", "fdisk", "sfdisk", "parted"):
            return f"{prog} formats or repartitions disks"
        if prog == "dd" and any(a.startswith("of=/dev/") and a not in ("of=/dev/null", "of=/dev/stdout", "of=/dev/stderr")
                                for a in args):
            return "dd writing to a device overwrites a disk"
        if prog in ("chmod", "chown", "chgrp") and (flags & {"-R", "--recursive"}) and any(
                o.rstrip("/") == "" for o in operands):
            return f"{prog} -R on / changes every file on the system"
        if prog == "shred" and any(_DISK_DEVICE.match(o) for o in operands):
            return "shred on a disk device destroys it"
    for target in re.findall(r">\s*(/dev/\S+)", command):
        if _DISK_DEVICE.match(target):
            return "it writes directly to a disk device"
    return None


def _format(result: sandbox.SandboxResult, timeout_s: float) -> str:
    if result.timed_out:
        head = (f"timed out after {timeout_s:g} s: the command and everything it started were killed "
                f"(output so far below)")
    elif result.killed_reason == "cancelled":
        head = (f"stopped by the person (Ctrl-C) after {result.duration_s:.2f} s: the command and everything "
                "it started were killed (output so far below)")
    elif result.exit_code is None or result.killed_reason:
        head = f"killed ({result.killed_reason}) after {result.duration_s:.2f} s"
    else:
        head = f"exit code {result.exit_code} ({result.duration_s:.2f} s)"
    parts = [head]
    if result.truncated:
        parts.append(f"[output cut: {result.stdout_bytes} bytes of stdout, {result.stderr_bytes} bytes of stderr; "
                     "head and tail kept. Redirect to a file and read parts of it instead]")
    parts.append("--- stdout ---\n" + (result.stdout.rstrip("\n") or "(empty)"))
    if result.stderr:
        parts.append("--- stderr ---\n" + result.stderr.rstrip("\n"))
    return "\n".join(parts)


#: what a failed command's own words mean inside the sandbox, and what to do instead
_EXPLAINED = (
    ("Read-only file system", "in this sandbox only the workspace (and a private /tmp, discarded after the call) "
     "can be written; everything else is read-only by design, and nothing (sudo, remount, chmod) changes that: "
     "write inside the workspace instead"),
    ("Temporary failure in name resolution", "the sandbox has no network (the person can allow it with "
     "AGENT_SHELL_NETWORK=true): work with what is in the workspace"),
    ("Network is unreachable", "the sandbox has no network (the person can allow it with AGENT_SHELL_NETWORK=true): "
     "work with what is in the workspace"),
)


def cause(result: sandbox.SandboxResult) -> str:
    """The line that says why a command failed: stderr's last non-empty line, else stdout's."""
    for stream in (result.stderr, result.stdout):
        lines = [ln.strip() for ln in stream.splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return ""


def explanation(result: sandbox.SandboxResult) -> str:
    """What the sandbox has to do with the failure, when its output shows it ('' otherwise)."""
    said = result.stderr + result.stdout
    return next((why for words, why in _EXPLAINED if words in said), "")


def shell_tool(settings: Any, *, policy: sandbox.SandboxPolicy | None = None) -> Tool:
    """The ``shell`` tool for ``settings`` (workspace, sandbox, network, tool timeout)."""
    base = policy or sandbox.SandboxPolicy.from_settings(settings)
    max_timeout = base.timeout_s

    def shell(command: str, cwd: str | None = None, timeout_s: float | None = None, *,
              cancel: threading.Event | None = None) -> ToolResult:
        if not command.strip():
            raise ToolError("the command is empty", hint="pass a shell command, e.g. 'ls -la'")
        reason = refusal(command)
        if reason:
            return ToolResult.error(f"refused: {reason}",
                                    hint="work inside the workspace with paths relative to it")
        folder = None
        if cwd not in (None, "", "."):
            folder = resolve_in_workspace(base.workspace, cwd)
            if not folder.is_dir():
                raise ToolError(f"cwd {cwd!r} is not a folder in the workspace", hint="create it first or omit cwd")
        timeout = max_timeout if timeout_s is None else min(float(timeout_s), max_timeout)
        if timeout <= 0:
            raise ToolError("timeout_s must be positive", hint=f"use a value up to {max_timeout:g}")
        try:
            result = sandbox.run(command, base, cwd=folder, timeout_s=timeout, cancel=cancel)
        except SandboxError as exc:
            return ToolResult.error(exc.message, exc.hint)
        stopped = result.killed_reason == "cancelled"
        what = "stopped" if stopped else "timed out" if result.timed_out else f"exit {result.exit_code}"
        summary = f"{what}: {command[:80]}"
        content = _format(result, timeout)
        if not result.ok and not stopped and not result.timed_out:
            why = cause(result)
            summary = f"{what}: {why[:120]}" if why else summary  # the call line above shows the command
            note = explanation(result)
            if note:
                content += f"\nnote: {note}"
        return ToolResult(content, ok=result.ok, summary=summary, data={
            "exit_code": result.exit_code, "duration_s": round(result.duration_s, 3),
            "timed_out": result.timed_out, "truncated": result.truncated, "killed_reason": result.killed_reason,
            "interrupted": stopped})

    return Tool(
        name="shell",
        description=("Run a bash command in the workspace, e.g. to run tests or a script. Sandboxed: only the "
                     "workspace is writable, " + ("the network is on" if base.network else "there is no network")
                     + f". Returns the exit code and the output (long output is cut). Timeout {max_timeout:g} s."),
        parameters=object_schema({
            "command": {"type": "string", "description": "the command line, run with bash -c"},
            "cwd": {"type": "string", "description": "subfolder of the workspace to run in (default: the root)"},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0,
                          "description": f"seconds before the command is killed (at most {max_timeout:g})"},
        }, required=["command"]),
        fn=shell,
        timeout_s=max_timeout + 15,  # the sandbox kills first; the registry's limit is a backstop
    )
