"""The ``promote_skill`` tool: a function the agent wrote becomes a tool it can call.

Reads the file through the workspace confinement, checks the function statically
(:mod:`tool.skills.validate`), runs the examples in the sandbox, then writes
``workspace/skills/<name>.py`` (header + the module's source) as a new version. The loader offers
it from the next model call on.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from jsonschema import Draft202012Validator

from core.errors import ToolError
from core.paths import open_confined, refuse_protected, relative_to_workspace
from core.tools import Tool, ToolResult, object_schema
from tool.skills.files import SkillStore, split_header
from tool.skills.loader import BUILTIN_NAMES
from tool.skills.runner import SkillRunner, failure_hint, failure_text
from tool.skills.schema import SkillInvalid
from tool.skills.validate import MAX_SOURCE_BYTES, SkillSpec, analyse

MAX_EXAMPLES = 20


def _read_source(root: Path, file_path: Any) -> tuple[str, str]:
    """(text, workspace-relative path) of the model's file; every path goes through the confinement."""
    if not isinstance(file_path, str) or not file_path.strip():
        raise ToolError("file_path is empty", hint="give the workspace-relative path of the .py file")
    real = refuse_protected(root, file_path)  # not the agent's own state (.agent/) nor the secrets file
    shown = relative_to_workspace(root, real)
    if real.suffix != ".py":
        raise ToolError(f"{shown!r} is not a .py file", hint="put the function in a Python file first")
    try:
        with open_confined(root, file_path, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except FileNotFoundError:
        raise ToolError(f"{shown!r} does not exist", hint="write the function to a file first (write_file)") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise ToolError(f"{shown!r} is larger than {MAX_SOURCE_BYTES // 1024} KB", hint="keep a skill small")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{shown!r} is not UTF-8 text", hint="save it as UTF-8") from None
    _, body = split_header(text)  # promoting a skill file again: its old header is not part of the module
    return body, shown


def _check_examples(examples: Any, spec: SkillSpec) -> list[dict[str, Any]]:
    if examples is None:
        return []
    if not isinstance(examples, list):
        raise ToolError("examples must be a list", hint='e.g. [{"args": {"text": "a b"}, "expected": 2}]')
    if len(examples) > MAX_EXAMPLES:
        raise ToolError(f"{len(examples)} examples; at most {MAX_EXAMPLES}", hint="keep the telling ones")
    validator = Draft202012Validator(spec.parameters)
    checked = []
    for i, example in enumerate(examples, 1):
        if not isinstance(example, dict) or "args" not in example or not isinstance(example["args"], dict):
            raise ToolError(f"example {i} is not an object with an 'args' object",
                            hint='write {"args": {...}, "expected": value} or {"args": {...}} (must not raise)')
        unknown = set(example) - {"args", "expected"}
        if unknown:
            raise ToolError(f"example {i} has unknown keys: {', '.join(sorted(unknown))}",
                            hint="an example has only 'args' and, optionally, 'expected'")
        errors = sorted(validator.iter_errors(example["args"]), key=lambda e: list(e.absolute_path))
        if errors:
            raise ToolError(f"example {i}'s args do not fit {spec.signature()}: {errors[0].message}",
                            hint="give each required parameter, with the type its hint says")
        checked.append(example)
    return checked


def same_value(got: Any, expected: Any) -> bool:
    """JSON equality, with floats compared to about 9 significant digits."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(same_value(a, b) for a, b in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same_value(got[k], expected[k]) for k in got)
    return type(got) is type(expected) and got == expected


def _run_examples(runner: SkillRunner, spec: SkillSpec, source: str, examples: list[dict[str, Any]]) -> str:
    """Runs the examples (or just imports the module) in the sandbox; raises ToolError on the first failure."""
    staging = tempfile.mkdtemp(prefix="skill-check-")
    try:
        path = Path(staging) / f"{spec.name}.py"
        path.write_text(source, encoding="utf-8")
        calls = [e["args"] for e in examples]
        outcomes = runner.run(path, spec.name, spec.function, calls or [], data=source.encode("utf-8"))
        if not calls:
            if outcomes and not outcomes[0].ok:
                raise ToolError(failure_text(spec.name, outcomes[0]), hint=failure_hint(outcomes[0]))
            return "no examples given: the module loads cleanly in the sandbox (give examples to check results)"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for i, (example, outcome) in enumerate(zip(examples, outcomes), 1):
        shown = json.dumps(example["args"])[:200]
        if not outcome.ok:
            what = outcome.error.rstrip()
            raise ToolError(f"example {i} ({spec.function}(**{shown})) failed: {what}", hint=failure_hint(outcome))
        if "expected" in example and not same_value(outcome.value, example["expected"]):
            raise ToolError(f"example {i} ({spec.function}(**{shown})) returned {json.dumps(outcome.value)[:300]}, "
                            f"expected {json.dumps(example['expected'])[:300]}",
                            hint="fix the function, or the expected value if the function is right")
    return f"{len(examples)} example{'s' if len(examples) != 1 else ''} passed in the sandbox"


def promote(root: Path, runner: SkillRunner, reserved: Iterable[str], file_path: Any, function_name: Any,
            tool_name: Any = None, description: Any = None, examples: Any = None) -> ToolResult:
    """Validate and write one skill; every problem raises :class:`ToolError` with what to fix."""
    if tool_name is not None and not isinstance(tool_name, str):
        raise SkillInvalid("tool_name must be a string", hint="e.g. 'count_words'")
    if description is not None and not isinstance(description, str):
        raise SkillInvalid("description must be a string", hint="one or two sentences")
    source, shown = _read_source(root, file_path)
    if not isinstance(function_name, str):
        raise SkillInvalid("function_name must be a string", hint="the name of the def")
    spec = analyse(source, function_name, name=tool_name or None, description=description or None,
                   reserved=reserved, filename=shown)
    checked = _check_examples(examples, spec)
    # the module runs inside the sandbox exactly as it will be stored (without a header: it is comments)
    verdict = _run_examples(runner, spec, source, checked)
    store = SkillStore(root)
    written = store.save(spec.name, spec.function, source, source=shown, function_sha256=spec.function_sha256,
                         description=spec.description)
    what = f"new version {written.version} of" if written.replaced else "new"
    text = (f"Promoted {shown}:{spec.function} as {what} skill {spec.signature()} -> skills/{spec.name}.py; "
            f"{verdict}. It can be called from the next step.")
    return ToolResult(text, summary=f"skill {spec.name} v{written.version}",
                      data={"skill": spec.name, "version": written.version, "path": f"skills/{spec.name}.py"})


def promote_skill_tool(settings: Any = None, *, workspace: str | os.PathLike[str] | None = None,
                       registry: Any = None, runner: SkillRunner | None = None,
                       reserved: Callable[[], Iterable[str]] | None = None) -> Tool:
    """The ``promote_skill`` tool for ``settings``'s workspace; built-in names come from ``registry``."""
    root = Path(workspace if workspace is not None else settings.workspace_root)
    made: dict[str, SkillRunner] = {}

    def names() -> set[str]:
        found = set(BUILTIN_NAMES)
        if reserved is not None:
            found |= set(reserved())
        elif registry is not None and hasattr(registry, "registered_names"):
            found |= set(registry.registered_names())
        return found

    def promote_skill(file_path: str, function_name: str, tool_name: str | None = None,
                      description: str | None = None, examples: list[Mapping[str, Any]] | None = None) -> ToolResult:
        run = runner or made.get("runner")
        if run is None:
            run = made["runner"] = SkillRunner(settings)
        return promote(root, run, names(), file_path, function_name, tool_name, description, examples)

    return Tool(
        name="promote_skill",
        description=("Only when the person asks you to make a new tool or skill: register a function from a "
                     "workspace .py file as a tool you can call from the next step on. Never use it to write, fix "
                     "or run code. The function needs a type hint on every parameter, a return annotation and a "
                     "docstring; examples are run to check it."),
        parameters=object_schema({
            "file_path": {"type": "string", "description": "workspace-relative path of the .py file"},
            "function_name": {"type": "string", "description": "name of the function in that file"},
            "tool_name": {"type": "string", "description": "lower_snake_case tool name (default: the function's)"},
            "description": {"type": "string", "description": "what the tool does (default: the docstring's summary)"},
            "examples": {"type": "array", "description": 'calls to check, e.g. [{"args": {"text": "a b"}, '
                                                          '"expected": 2}]; without "expected" a call must not raise',
                         "items": {"type": "object"}},
        }, required=["file_path", "function_name"]),
        fn=promote_skill,
        timeout_s=float(getattr(settings, "tool_timeout_s", 120.0)) + 15 if settings is not None else 135.0,
    )
