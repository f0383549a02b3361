"""From a skill's source to its tool schema: type hints to JSON Schema, the docstring's ``Args:``.

Everything here reads the syntax tree; nothing is imported or run. A hint that has no JSON
form raises :class:`SkillInvalid` saying which parameter and what to write instead.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from core.errors import ToolError

SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
#: typing aliases accepted for the builtin generics
LIST_NAMES = {"list", "List", "Sequence"}
DICT_NAMES = {"dict", "Dict", "Mapping"}
SUPPORTED = ("str, int, float, bool, list[...], dict[str, ...], Literal[...], Optional[...] or X | None")


class SkillInvalid(ToolError):
    """A skill that cannot be promoted or loaded; the message says what to fix."""


def _name_of(node: ast.expr) -> str | None:
    """``List`` for ``List``, ``typing.List`` and ``t.List``; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _args_of(node: ast.expr) -> list[ast.expr]:
    return list(node.elts) if isinstance(node, ast.Tuple) else [node]


def hint_schema(node: ast.expr, where: str) -> dict[str, Any]:
    """The JSON Schema for the annotation ``node``; ``where`` names it in errors ("parameter 'n'")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:  # a string annotation ("list[int]", or any hint under `from __future__ import annotations`)
            inner = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            raise SkillInvalid(f"the type hint of {where} ({node.value!r}) is not valid Python",
                               hint=f"use one of: {SUPPORTED}") from None
        return hint_schema(inner, where)
    if isinstance(node, ast.Constant) and node.value is None:
        return {"type": "null"}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([node.left, node.right], where)
    name = _name_of(node)
    if name in SCALARS:
        return {"type": SCALARS[name]}
    if name in LIST_NAMES:
        return {"type": "array"}
    if name in DICT_NAMES:
        return {"type": "object"}
    if isinstance(node, ast.Subscript):
        outer = _name_of(node.value)
        args = _args_of(node.slice)
        if outer in LIST_NAMES and len(args) == 1:
            return {"type": "array", "items": hint_schema(args[0], where)}
        if outer in DICT_NAMES and len(args) == 2:
            if _name_of(args[0]) != "str":
                raise SkillInvalid(f"{where}: JSON object keys are strings, so the hint must be dict[str, ...]",
                                   hint="change the key type to str")
            return {"type": "object", "additionalProperties": hint_schema(args[1], where)}
        if outer == "Optional" and len(args) == 1:
            return _union([args[0], ast.Constant(None)], where)
        if outer == "Union":
            return _union(args, where)
        if outer == "Literal":
            return _literal(args, where)
        if outer in ("tuple", "Tuple", "set", "Set", "frozenset"):
            raise SkillInvalid(f"{where}: {outer}[...] has no JSON form", hint="use list[...] instead")
    shown = ast.unparse(node)
    if name == "Any":
        raise SkillInvalid(f"{where} is typed Any, which tells the model nothing", hint=f"use one of: {SUPPORTED}")
    raise SkillInvalid(f"the type hint of {where} ({shown}) has no JSON Schema form", hint=f"use one of: {SUPPORTED}")


def _union(members: list[ast.expr], where: str) -> dict[str, Any]:
    schemas: list[dict[str, Any]] = []
    for member in members:
        schema = hint_schema(member, where)
        for part in schema.get("anyOf", [schema]):
            if part not in schemas:
                schemas.append(part)
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _literal(args: list[ast.expr], where: str) -> dict[str, Any]:
    values = []
    for arg in args:
        if not isinstance(arg, ast.Constant) or not isinstance(arg.value, (str, int, float, bool, type(None))):
            raise SkillInvalid(f"{where}: Literal[...] may hold only strings, numbers, booleans or None",
                               hint="for example Literal['fast', 'exact']")
        values.append(arg.value)
    if not values:
        raise SkillInvalid(f"{where}: Literal[] is empty", hint="list the allowed values, e.g. Literal['a', 'b']")
    return {"enum": values}


# --- the docstring ---------------------------------------------------------------------------------

_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Return|Yields|Raises|Examples?|Notes?|"
                      r"Attributes|See Also|Warnings?|Todo)\s*:\s*$")
_ENTRY = re.compile(r"^(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:\s*(.*)$")


def split_docstring(doc: str) -> tuple[str, dict[str, str], str]:
    """(summary paragraph, {parameter: description} from ``Args:``, ``Returns:`` text)."""
    lines = doc.expandtabs().splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line):
            break
        summary.append(line.strip())
    args: dict[str, str] = {}
    returns: list[str] = []
    section = ""
    base_indent: int | None = None
    current: str | None = None
    for line in lines:
        match = _SECTION.match(line)
        if match:
            section, base_indent, current = match.group(1), None, None
            continue
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if section in ("Args", "Arguments", "Parameters"):
            if base_indent is None:
                base_indent = indent
            entry = _ENTRY.match(line.strip())
            if indent <= base_indent and entry:
                current = entry.group(1).lstrip("*")
                args[current] = entry.group(3).strip()
            elif current is not None and indent > base_indent:
                args[current] = (args[current] + " " + line.strip()).strip()
        elif section in ("Returns", "Return"):
            returns.append(line.strip())
    return " ".join(summary), args, " ".join(returns)
