"""Runs one skill inside the sandbox: JSON request on stdin, JSON reply on stdout.

Run as a script with the agent's interpreter (``python -I runner_main.py``); it imports nothing
from the project, whose folder is not visible in the sandbox. Request::

    {"path": "/run/agent/skill/name.py", "sha256": "<of the file's bytes>", "function": "name",
     "module": "skill_name", "calls": [{"a": 1}, ...]}

Reply: ``{"results": [{"ok": true, "value": ...} | {"ok": false, "kind": "...", "error": "..."}],
"load_error": null | {...}}`` with ``kind`` one of ``exception``, ``not_json``, ``import``, ``changed``. Output the skill prints
goes to stderr, so stdout carries only the reply.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
import types

TRACEBACK_CHARS = 3000


def trimmed_traceback(exc: BaseException, path: str) -> str:
    """The traceback from the skill's first frame on, cut to the last few thousand characters."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != path:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb if tb is not None else exc.__traceback__))
    return text if len(text) <= TRACEBACK_CHARS else "...\n" + text[-TRACEBACK_CHARS:]


def load(path: str, sha256: str, module_name: str) -> types.ModuleType:
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise LookupError("the skill file changed after it was checked; it is checked again before the next step")
    module = types.ModuleType(module_name)
    module.__file__ = path
    sys.modules[module_name] = module  # dataclasses and pickle look their module up here
    exec(compile(data, path, "exec"), module.__dict__)
    return module


def main() -> None:
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # print() in the skill goes to stderr; stdout carries only the reply
    request = json.loads(sys.stdin.read())
    sys.stdin = open(os.devnull)  # a skill that reads input sees end-of-file, not our pipe
    path = request["path"]
    results: list[dict] = []
    load_error = None
    fn = None
    try:
        fn = getattr(load(path, request["sha256"], request["module"]), request["function"])
    except LookupError as exc:
        load_error = {"ok": False, "kind": "changed", "error": str(exc)}
    except BaseException as exc:  # the module's own top-level code failed
        load_error = {"ok": False, "kind": "import", "error": trimmed_traceback(exc, path)}
    if load_error is not None:
        results = [load_error for _ in request["calls"]]
    if fn is not None:
        for args in request["calls"]:
            try:
                value = fn(**args)
            except BaseException as exc:  # SystemExit and KeyboardInterrupt from the skill are its errors too
                results.append({"ok": False, "kind": "exception", "error": trimmed_traceback(exc, path)})
                continue
            try:
                text = json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                results.append({"ok": False, "kind": "not_json",
                                "error": f"returned {type(value).__name__}, which is not JSON-serialisable ({exc})"})
                continue
            del text  # checked; the reply below serialises the value itself
            results.append({"ok": True, "value": value})
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    with os.fdopen(reply_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps({"results": results, "load_error": load_error}))


if __name__ == "__main__":
    main()
