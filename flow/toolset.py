"""Which tools to offer for a task, in which order.

Small models pick the wrong tool when many are offered (``promote_skill`` for a rename, ``fetch``
for a local file), and every tool description costs prompt tokens that a CPU processes at tens per
second. So by default (``AGENT_TOOLSET=relevant``) the core tools are always offered and the
optional ones only when the task's words call for them; ``all`` offers every enabled tool.

Order matters as much as choice: the chat template renders the tools right after the
instructions, so the core tools come first, always in the same order, and a prefix cache serves
them on every task. Then the optional tools the task needs, then the skills.

With ``relevant``, tools are also shown lean (:data:`LEAN_ARGUMENTS`): under a grammar a small model
fills in every property it is shown (``cwd`` of the shell, ``line_numbers`` of read_file), so only
the arguments that matter are shown, and a call with another one is an error that says so.

``promote_skill`` is offered whenever the task is about tools or skills (a small model reached for
it on every task that said "function"), and it is never what gives way to a small context;
the skills themselves are always offered (the skill loader already limits how many).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

from core.tools import Tool

#: offered for every task, in this order
CORE = ("read_file", "edit_file", "write_file", "list_files", "search_files", "promote_skill", "shell")
#: what a task's words must mention for an optional tool to be offered
TRIGGERS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.IGNORECASE)
    for name, pattern in {
        "pyexe": r"\bpyexe\b|\brepl\b|\binterpreter\b|\bcalculat|\bcompute\b|\bevaluate\b|\bpython (?:code|snippet|session)",
        "fetch": r"https?://|\bwww\.|\burl\b|\bweb ?(?:page|site)?\b|\bwebsite\b|\bfetch\b|\bdownload\b|\bonline\b|\binternet\b",
        "data_view": r"\.(?:csv|tsv|parquet|jsonl|ndjson|xlsx?|feather|arrow)\b|\bdata ?(?:file|set|frame)s?\b"
                     r"|\bdataset\b|\bcolumns?\b|\bdata_view\b",
        "memory": r"\bremember|\brecall\b|\bmemor(?:y|ies|ise|ize)\b|\bforget\b|\bpreferences?\b|\blast time\b"
                  r"|\bfrom now on\b|\bnext time\b|\bnote (?:this|that)\b",
        "plan": r"\bplan\b|\bchecklist\b|\btodo\b|\bto-do\b|\bstep by step\b|\bmilestones?\b",
        # a small model reaches for it whenever a task says "function"; offered when skills are the subject
        "promote_skill": r"\bskills?\b|\bpromot|\b(?:new|own|reusable|a) tool\b|\btool (?:from|out of|for)\b"
                         r"|\breus(?:e|able)\b",
    }.items()
}
#: the arguments a small model is shown (``relevant`` toolset): the rest of a schema's optional ones
#: are left out, because under a grammar a small model fills in every property it is shown
LEAN_ARGUMENTS = {
    "read_file": ("path", "start_line"),
    "list_files": ("path", "glob"),
    "search_files": ("pattern", "path"),
    "write_file": ("path", "content"),
    "edit_file": ("path", "old_text", "new_text"),
    "shell": ("command",),
    "promote_skill": ("file_path", "function_name", "examples"),
}
#: a task this long is multi-step work: the plan tool is offered whatever its words
LONG_TASK_CHARS = 600
#: what gives way first when the descriptions crowd a small context (never promote_skill)
OPTIONAL_ORDER = ("memory", "data_view", "fetch", "pyexe", "plan")


@dataclass(frozen=True)
class Choice:
    tools: list[Tool]
    left_out: tuple[str, ...]  # optional tools this task's words did not call for
    dropped: tuple[str, ...]  # tools the task wanted that did not fit the context


def wanted(name: str, task: str) -> bool:
    """Whether ``task`` calls for the optional tool ``name``."""
    if name == "plan" and len(task) >= LONG_TASK_CHARS:
        return True
    trigger = TRIGGERS.get(name)
    return bool(trigger and trigger.search(task))


def lean(tool: Tool) -> Tool:
    """``tool`` with only the arguments in :data:`LEAN_ARGUMENTS` (the same tool when not listed)."""
    keep = LEAN_ARGUMENTS.get(tool.name)
    props = (tool.parameters or {}).get("properties")
    if keep is None or not isinstance(props, dict) or tool.source == "skill":
        return tool
    slim = dict(tool.parameters)
    slim["properties"] = {k: v for k, v in props.items() if k in keep}
    if "required" in slim:
        slim["required"] = [k for k in slim["required"] if k in slim["properties"]]
    return replace(tool, parameters=slim)


def stable_order(tools: Sequence[Tool]) -> list[Tool]:
    """Core tools first in :data:`CORE` order, then the other built-ins, then the skills."""
    rank = {name: i for i, name in enumerate(CORE)}
    indexed = list(enumerate(tools))
    indexed.sort(key=lambda p: (0 if p[1].name in rank else 2 if p[1].source == "skill" else 1,
                                rank.get(p[1].name, p[0])))
    return [t for _, t in indexed]


def choose_tools(tools: Sequence[Tool], task: str, *, everything: bool, fits) -> Choice:
    """The tools to offer for ``task``.

    ``everything``: offer every tool (``AGENT_TOOLSET=all``). ``fits(tools) -> bool`` says whether
    the descriptions fit the context's share for tools; optional tools give way until they do.
    Only the optional built-ins (:data:`TRIGGERS`) are chosen by the task's words; core tools,
    ``promote_skill``, the skills and any tool the program added are always offered.
    """
    ordered = stable_order(tools)
    left_out: list[str] = []
    if not everything:
        kept = []
        for tool in ordered:
            if tool.name not in TRIGGERS or wanted(tool.name, task):
                kept.append(tool)
            else:
                left_out.append(tool.name)
        ordered = kept
    dropped: list[str] = []
    if not everything:
        ordered = [lean(t) for t in ordered]
    optional = [t.name for t in ordered if t.name in TRIGGERS]
    order = [n for n in OPTIONAL_ORDER if n in optional]
    for name in order:
        if fits(ordered):
            break
        ordered = [t for t in ordered if t.name != name]
        dropped.append(name)
    return Choice(ordered, tuple(left_out), tuple(dropped))
