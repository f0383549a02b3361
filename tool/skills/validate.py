"""The static checks a skill passes before it is offered: read from the syntax tree, never run.

:func:`analyse` takes a module's source and the name of one function in it and returns a
:class:`SkillSpec` (the tool's name, description and JSON schema), or raises
:class:`SkillInvalid` with what to fix. The same checks run when the model promotes a function
and when the loader finds a file in ``workspace/skills/``.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib.util
import keyword
import os
import re
import symtable
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

from tool.skills.schema import SkillInvalid, hint_schema, split_docstring

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_NAME = 48
MAX_DESCRIPTION = 1024
MAX_SOURCE_BYTES = 256 * 1024
#: names a module has at run time without defining them
MODULE_DUNDERS = {"__name__", "__file__", "__doc__", "__spec__", "__loader__", "__package__", "__builtins__",
                  "__annotations__", "__dict__"}
_BUILTINS = set(dir(builtins))


@dataclass(frozen=True)
class SkillSpec:
    """What a valid skill offers: everything the tool needs, from the source alone."""

    name: str
    function: str
    description: str
    parameters: dict[str, Any]
    function_sha256: str
    imports: tuple[str, ...] = field(default=())

    def signature(self) -> str:
        props = self.parameters.get("properties", {})
        required = set(self.parameters.get("required", ()))
        parts = [f"{p}{'' if p in required else '?'}" for p in props]
        return f"{self.name}({', '.join(parts)})"


def check_name(name: Any, reserved: Iterable[str] = ()) -> str:
    """``name`` if it can be a skill's tool (and file) name; :class:`SkillInvalid` otherwise."""
    if not isinstance(name, str) or not name:
        raise SkillInvalid("the tool name is empty", hint="give tool_name in lower_snake_case, e.g. 'count_words'")
    if not NAME_RE.fullmatch(name):
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise SkillInvalid(f"the tool name {shown!r} must be lower_snake_case: a letter, then letters, digits or '_'",
                           hint="no paths, dots, dashes or capitals; e.g. 'parse_dates'")
    if len(name) > MAX_NAME:
        raise SkillInvalid(f"the tool name {name!r} is {len(name)} characters long; at most {MAX_NAME}",
                           hint="choose a shorter name")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise SkillInvalid(f"the tool name {name!r} is a Python keyword", hint="choose another name")
    if name in set(reserved):
        raise SkillInvalid(f"{name!r} is the name of a built-in tool", hint="choose another tool_name")
    return name


# --- imports ---------------------------------------------------------------------------------------

def _visible_roots() -> tuple[str, ...]:
    """Where modules the sandbox can import live: the interpreter's own installation and the venv."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    return tuple(r.rstrip(os.sep) + os.sep for r in roots)


def import_problem(module: str, cache: dict[str, str | None] | None = None) -> str | None:
    """Why ``module`` cannot be imported by a skill in the sandbox, or None when it can.

    Found with :func:`importlib.util.find_spec` on the top-level name (which does not run the
    module); it must be in the standard library or installed in the agent's environment, since the
    project's folder and the workspace are not on the sandbox's import path.
    """
    top = module.split(".")[0]
    if cache is not None and top in cache:
        return cache[top]
    problem: str | None = None
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        problem = None
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError) as exc:
            spec, problem = None, f"{top!r} cannot be looked up ({exc})"
        if spec is None:
            problem = problem or f"{top!r} is not installed"
        else:
            places = [spec.origin] if spec.origin and spec.has_location else []
            places += list(spec.submodule_search_locations or [])
            roots = _visible_roots()
            if not places or not all(os.path.realpath(p).startswith(roots) for p in places):
                problem = (f"{top!r} is not part of the standard library or the installed packages "
                           "(it is a local module, which the sandbox cannot import)")
    if cache is not None:
        cache[top] = problem
    return problem


def _guarded_imports(tree: ast.Module) -> set[int]:
    """ids of imports inside ``try:`` blocks that catch ImportError: optional, may be missing."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {k.id for k in kinds if isinstance(k, ast.Name)} if handler.type is not None else {"*"}
        if caught & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException", "*"}:
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return guarded


def _check_imports(tree: ast.Module, cache: dict[str, str | None] | None) -> tuple[str, ...]:
    found: list[str] = []
    optional = _guarded_imports(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise SkillInvalid(f"line {node.lineno}: relative import 'from {'.' * node.level}{node.module or ''} "
                                   "import ...'; a skill is a single self-contained file",
                                   hint="copy what you need into the file, or import an installed package")
            if any(alias.name == "*" for alias in node.names):
                raise SkillInvalid(f"line {node.lineno}: 'from {node.module} import *' hides which names come from where",
                                   hint=f"import the names you use: from {node.module} import a, b")
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            problem = import_problem(name, cache)
            if problem and problem.endswith("is not installed") and id(node) in optional:
                continue  # `try: import fast_json except ImportError: ...` works without it
            if problem:
                raise SkillInvalid(f"line {node.lineno}: {problem}",
                                   hint="use only the standard library and installed packages, and put helper "
                                        "functions in the same file")
            found.append(name)
    return tuple(dict.fromkeys(found))


# --- the module's shape ----------------------------------------------------------------------------

def _is_main_guard(node: ast.stmt) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value == "__main__")


def _check_module_shape(tree: ast.Module) -> None:
    """Module-level code runs on every call: only definitions, imports and constants are allowed."""
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
               ast.AnnAssign, ast.Pass)
    for i, node in enumerate(tree.body):
        if isinstance(node, allowed) or _is_main_guard(node):
            continue
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the module's docstring
        parts = (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]) \
            if isinstance(node, ast.Try) else ()
        if parts and all(isinstance(n, (ast.Import, ast.ImportFrom, ast.Assign, ast.Pass)) for part in parts
                         for n in part):
            continue  # try: import fast_json except ImportError: ...
        raise SkillInvalid(f"line {node.lineno}: module-level code ({ast.unparse(node).splitlines()[0][:60]}) "
                           "would run on every call of the skill",
                           hint="keep only imports, constants, functions and classes at module level; put trial "
                                "code under `if __name__ == \"__main__\":`")


def _module_names(tree: ast.Module) -> set[str]:
    """Names the module defines when imported: not those set only under ``if __name__ == "__main__":``."""
    names: set[str] = set()
    for node in tree.body:
        if _is_main_guard(node):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                names.add(sub.id)
            elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in sub.names)
    for sub in ast.walk(tree):  # `global x` in a function that then sets x
        if isinstance(sub, ast.Global):
            names.update(sub.names)
    return names


def _check_free_names(source: str, filename: str, tree: ast.Module) -> None:
    """Every name a function reads is its own, the module's, or a builtin: no globals from elsewhere."""
    try:
        top = symtable.symtable(source, filename, "exec")
    except SyntaxError as exc:
        raise SkillInvalid(f"line {exc.lineno}: {exc.msg}", hint="fix the syntax error") from None
    defined = _module_names(tree)
    known = defined | _BUILTINS | MODULE_DUNDERS
    guards = [node for node in tree.body if _is_main_guard(node)]
    guard_lines = {n for g in guards for n in range(g.lineno, (g.end_lineno or g.lineno) + 1)}

    def lines_of(name: str) -> list[int]:
        return sorted({n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == name
                       and isinstance(n.ctx, ast.Load) and n.lineno not in guard_lines})

    def visit(table: symtable.SymbolTable) -> None:
        for sym in table.get_symbols():
            name = sym.get_name()
            if not sym.is_referenced() or name in known:
                continue
            if table.get_type() == "module" or sym.is_global():
                lines = lines_of(name)
                if not lines:
                    continue  # read only in the `if __name__ == "__main__":` block, which a call never runs
                where = f"line {lines[0]}"
                raise SkillInvalid(f"{where}: {name!r} is not defined in the file (not a parameter, a local "
                                   "variable, an import, a constant or a function of this file, nor a builtin)",
                                   hint="a skill must be self-contained: import or define everything it uses "
                                        "in the same file")
        for child in table.get_children():
            visit(child)

    visit(top)


# --- the function ----------------------------------------------------------------------------------

def _find_function(tree: ast.Module, function: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef) and node.name == function:
            raise SkillInvalid(f"{function!r} is an async function", hint="make it a plain def")
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return node
    nested = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function for n in ast.walk(tree))
    top = sorted(n.name for n in tree.body if isinstance(n, ast.FunctionDef))
    if nested:
        raise SkillInvalid(f"{function!r} is defined inside a class or another function, not at module level",
                           hint="move it to the top level of the file")
    raise SkillInvalid(f"there is no function {function!r} at module level",
                       hint=f"the module-level functions are: {', '.join(top) or 'none'}")


def _parameters(fn: ast.FunctionDef, doc_args: dict[str, str]) -> dict[str, Any]:
    a = fn.args
    if a.vararg or a.kwarg:
        star = f"*{a.vararg.arg}" if a.vararg else f"**{a.kwarg.arg}"  # type: ignore[union-attr]
        raise SkillInvalid(f"{fn.name} takes {star}; a tool needs named parameters",
                           hint="list each parameter by name with a type hint")
    if a.posonlyargs:
        raise SkillInvalid(f"{fn.name} has positional-only parameters (before '/'); arguments arrive by name",
                           hint="remove the '/'")
    positional = list(a.args)
    defaults: dict[str, ast.expr] = dict(zip([p.arg for p in positional[len(positional) - len(a.defaults):]],
                                             a.defaults))
    defaults.update({p.arg: d for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
    properties: dict[str, Any] = {}
    required: list[str] = []
    missing_doc = []
    for p in positional + list(a.kwonlyargs):
        where = f"parameter {p.arg!r}"
        if p.annotation is None:
            raise SkillInvalid(f"{where} of {fn.name} has no type hint", hint=f"write e.g. `{p.arg}: str`")
        schema = hint_schema(p.annotation, where)
        description = doc_args.get(p.arg, "").strip()
        if not description:
            missing_doc.append(p.arg)
        if p.arg in defaults:
            try:
                schema = {**schema, "default": ast.literal_eval(defaults[p.arg])}
            except ValueError:
                pass  # a default that is not a literal is still a default; the model just is not told it
        else:
            required.append(p.arg)
        properties[p.arg] = {**schema, "description": description}
    if missing_doc:
        raise SkillInvalid(f"the docstring of {fn.name} does not describe {', '.join(map(repr, missing_doc))} "
                           "in its Args: section",
                           hint="add an 'Args:' section with one line per parameter, e.g.\n    Args:\n"
                                f"        {missing_doc[0]}: what it is and its unit")
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def analyse(source: str, function: str, *, name: str | None = None, description: str | None = None,
            reserved: Iterable[str] = (), filename: str = "<skill>",
            import_cache: dict[str, str | None] | None = None) -> SkillSpec:
    """Check ``function`` in ``source`` as a skill called ``name`` (default: the function's name)."""
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise SkillInvalid(f"the file is larger than {MAX_SOURCE_BYTES // 1024} KB", hint="keep a skill small")
    if not isinstance(function, str) or not function.isidentifier():
        raise SkillInvalid(f"function_name {function!r} is not a Python identifier",
                           hint="give the name of the def, e.g. 'count_words'")
    tool_name = check_name(function if name is None else name, reserved)
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise SkillInvalid(f"the file does not parse: line {exc.lineno}: {exc.msg}", hint="fix the syntax error") from None
    fn = _find_function(tree, function)
    if fn.decorator_list:
        raise SkillInvalid(f"{function} has decorators, which would change what is called",
                           hint="remove them; call any wrapper from inside the function")
    _check_module_shape(tree)
    imports = _check_imports(tree, import_cache)
    _check_free_names(source, filename, tree)
    doc = ast.get_docstring(fn)
    if not doc or not doc.strip():
        raise SkillInvalid(f"{function} has no docstring",
                           hint="add one: a summary line, then an 'Args:' section describing each parameter")
    summary, doc_args, returns = split_docstring(doc)
    parameters = _parameters(fn, doc_args)
    if fn.returns is None:
        raise SkillInvalid(f"{function} has no return annotation", hint="add one, e.g. `-> dict[str, int]`")
    text = " ".join((description or "").split())
    if not text:
        text = summary + (f" Returns: {returns}" if returns else "")
    if not text.strip():
        raise SkillInvalid(f"the docstring of {function} has no summary line",
                           hint="start it with one sentence saying what the function does, or pass description")
    if len(text) > MAX_DESCRIPTION:
        raise SkillInvalid(f"the description is {len(text)} characters long; at most {MAX_DESCRIPTION}",
                           hint="say it in a few sentences")
    segment = ast.get_source_segment(source, fn) or ast.unparse(fn)
    sha = hashlib.sha256(segment.encode("utf-8")).hexdigest()
    return SkillSpec(tool_name, function, text, parameters, sha, imports)

