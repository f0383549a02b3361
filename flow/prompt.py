"""The system prompt: short, because small models follow short prompts.

A request starts with two system messages: the instructions (the same bytes for every task), then,
after the tools block the chat template renders, the environment (workspace, machine, the plan and
recalled memories). The stable part first lets prefix caches serve the instructions and the tools
on every new task. The tools and their schemas go through the API's ``tools`` field, not into this
text. Extra sections come from callables asked before every model call.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Callable, Iterable, Sequence, Union

#: ``(task, session_id) -> section text`` (empty or ``None``: no section)
PromptSection = Callable[[str, str], Union[str, None]]


def describe_os() -> str:
    """The operating system as a person would name it: ``Linux (Ubuntu 24.04)``, ``macOS 15.1``."""
    system = platform.system()
    if system == "Darwin":
        return f"macOS {platform.mac_ver()[0]}".strip()
    if system == "Linux":
        try:
            release = platform.freedesktop_os_release()
            pretty = release.get("PRETTY_NAME") or release.get("NAME")
        except OSError:
            pretty = None
        return f"Linux ({pretty})" if pretty else "Linux"
    if system == "Windows":
        return f"Windows {platform.release()}"
    return system or sys.platform


def describe_shell() -> str:
    """The shell commands run in: ``$SHELL`` (``%COMSPEC%`` on Windows), else the platform default."""
    if os.name == "nt":
        return os.environ.get("COMSPEC") or "cmd.exe"
    shell = os.environ.get("SHELL")
    return shell or "/bin/sh"


#: The instructions: the same bytes for every task, workspace and machine, so that a server that
#: caches prompt prefixes (this project's, llama-server, vLLM) serves them, and the tools block
#: the chat template puts right after them, from its cache. Everything that varies goes in
#: :func:`environment_prompt`, a second system message after the tools.
INSTRUCTIONS = "\n".join([
    "You are a coding agent working in a project folder (the workspace). You do the person's task yourself "
    "by calling the tools below, one step at a time; you see each result before your next step.",
    "How to work:",
    "- Look first. Before you answer a question about the code or change anything, read the files "
    "involved (read_file, list_files, search_files). Never guess what a file contains.",
    "- Make changes with the tools, never by showing code for the person to paste: edit_file changes part "
    "of a file (old_text copied exactly from the file), write_file creates a file or replaces all of it.",
    "- Get numbers and facts by running code with the shell tool (for example: python3 -c '...', wc -l, "
    "grep), not by working them out in your head.",
    "- After a change, check it with the shell tool: run the tests if the project has test files "
    "(python3 -m pytest -q), else call the code (python3 -c 'from mod import f; print(f(2))').",
    "- If a tool returns an error, read it and fix the call; never repeat a call that failed.",
    "- promote_skill is only for when the person asks you to make a new tool or skill.",
    "- When the task is done, reply in plain words without a tool call: that ends your turn. "
    "Give the answer the person asked for, or say briefly what you changed.",
])


def system_prompt() -> str:
    """The agent's instructions: identical for every task (see :data:`INSTRUCTIONS`)."""
    return INSTRUCTIONS


def environment_prompt(*, sections: Sequence[str] = (), os_name: str | None = None, shell: str | None = None) -> str:
    """What varies: the machine and the extra ``sections`` (the workspace's files, plan, recalled memories).

    The workspace is named by neither its full path nor its name: a small model copies either into
    every path it writes, and tools and commands work inside the workspace anyway.
    """
    text = ("Workspace: the current folder. Use paths relative to it, as in the file list; commands run in it.\n"
            f"System: {os_name or describe_os()}; shell: {shell or describe_shell()}.")
    for section in sections:
        section = (section or "").strip()
        if section:
            text += "\n\n" + section
    return text


def gather_sections(providers: Iterable[PromptSection], task: str, session_id: str,
                    on_error: Callable[[str], None] | None = None) -> list[str]:
    """Ask each provider for its section; one that raises is left out and reported to ``on_error``.

    A recall index that fails must not end the person's run: the prompt is just shorter.
    """
    found = []
    for provider in providers:
        try:
            text = provider(task, session_id)
        except Exception as exc:  # someone else's hook; the run goes on without its section
            if on_error is not None:
                name = getattr(provider, "__qualname__", type(provider).__name__)
                on_error(f"prompt section {name} left out: {exc}")
            continue
        if text and text.strip():
            found.append(text.strip())
    return found
