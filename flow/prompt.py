"""The system prompt: short, because small models follow short prompts.

The tools and their schemas go through the API's ``tools`` field, not into this text. Extra
sections (recalled memories, the current plan) come from callables asked before every model call.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
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


def system_prompt(workspace: Path | str, *, sections: Sequence[str] = (), os_name: str | None = None,
                  shell: str | None = None) -> str:
    """The agent's system prompt for ``workspace``, with optional extra ``sections`` appended."""
    lines = [
        "You are a coding agent. You work by calling tools, one step at a time.",
        f"Workspace: {workspace} (tool paths are relative to it).",
        f"System: {os_name or describe_os()}; shell: {shell or describe_shell()}.",
        "Look before you change things, make the smallest change that does the task, then check it.",
        "If a tool returns an error, read it and fix the call; do not repeat the same failing call.",
        "When the task is done, or you need an answer from the person, reply in plain text without "
        "a tool call: that ends your turn. Say briefly what you did.",
    ]
    text = "\n".join(lines)
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
