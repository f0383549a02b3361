"""GBNF grammars for llama.cpp from a :class:`~servr.engines.base.Constraint`.

JSON schemas go through llama-cpp-python's own converter (a port of llama.cpp's
``json_schema_to_grammar``). A tool call is wrapped in the ``<tool_call>`` markup the chat
templates and the shared parser use, with ``name`` fixed to one of the offered tools and
``arguments`` bound to that tool's schema, so the call always parses and validates.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

from servr.engines.base import Constraint, tool_call_schema

# any JSON object: what response_format json_object promises
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


MAX_INT_ENUM = 1000  # integer ranges up to this many values become an enum the grammar can enforce


def _bounded_integers(node: Any) -> Any:
    """The schema with small integer ranges written as enums.

    llama-cpp-python's converter ignores ``minimum``/``maximum``; a range of a few hundred values is
    cheap as a list of literals, so the grammar enforces it instead of the model guessing.
    """
    if isinstance(node, list):
        return [_bounded_integers(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _bounded_integers(v) for k, v in node.items()}
    if out.get("type") == "integer" and "enum" not in out:
        lo = out.get("minimum")
        hi = out.get("maximum")
        if isinstance(out.get("exclusiveMinimum"), (int, float)):
            lo = int(out["exclusiveMinimum"]) + 1
        if isinstance(out.get("exclusiveMaximum"), (int, float)):
            hi = int(out["exclusiveMaximum"]) - 1
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            lo_i, hi_i = int(-(-lo // 1)), int(hi // 1)
            if 0 <= hi_i - lo_i < MAX_INT_ENUM:
                kept = {k: v for k, v in out.items() if k in ("description", "title", "default")}
                return {**kept, "enum": list(range(lo_i, hi_i + 1))}
    return out


def _rules(schema: dict[str, Any], root_name: str) -> str:
    """Rules for ``schema``; its top rule is ``root_name`` (``""`` names it ``root``)."""
    converter = SchemaConverter(prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False,
                                raw_pattern=False)
    resolved = converter.resolve_refs(_bounded_integers(json.loads(json.dumps(schema))), "request")
    converter.visit(resolved, root_name)
    return converter.format_grammar()


def to_gbnf(constraint: Constraint) -> str:
    """The grammar text; raises ``ValueError`` naming the problem when the schema cannot be converted."""
    try:
        if constraint.kind == "json":
            return _rules(_ANY_OBJECT, "")
        if constraint.kind == "json_schema":
            return _rules(constraint.schema or _ANY_OBJECT, "")
        if not constraint.tools:
            raise ValueError("a tool_call constraint needs at least one tool")
        body = _rules(tool_call_schema(constraint), "call")
        return 'root ::= "<tool_call>\\n" call "\\n</tool_call>"\n' + body
    except (KeyError, TypeError, AssertionError, RecursionError, json.JSONDecodeError) as exc:
        raise ValueError(f"the JSON schema cannot be turned into a grammar ({type(exc).__name__}: {exc})") from None
