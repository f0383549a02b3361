"""Runs one skill inside the sandbox: JSON request on stdin, JSON reply on stdout.

Run as a script with the agent's interpreter (``python -I -S runner_main.py``); it imports
nothing from the project, whose folder is not visible in the sandbox. ``-S`` skips ``site`` (a
third of the start-up, most of it the project's own editable-install finder); the request names
the site-packages folders, added here with their ``.pth`` files. Request::

    {"path": "/run/agent/skill/name.py", "sha256": "<of the file's bytes>", "function": "name",
     "module": "skill_name", "calls": [{"a": 1}, ...], "site_dirs": ["/…/site-packages"]}

Reply: ``{"results": [{"ok": true, "value": ...} | {"ok": false, "kind": "...", "error": "..."}],
"load_error": null | {...}}`` with ``kind`` one of ``exception``, ``not_json``, ``import``, ``changed``. Output the skill prints
goes to stderr, so stdout carries only the reply.
"""

from __future__ import annotations

import json
import os
import sys

try:  # the builtin module: hashlib would load OpenSSL first, a tenth of the start-up
    from _sha256 import sha256
except ImportError:
    from hashlib import sha256

ModuleType = type(sys)

TRACEBACK_CHARS = 3000


def add_site_dirs(dirs: list[str]) -> None:
    """What ``site`` does for each folder: add it, then the paths and imports its ``.pth`` files name."""
    for folder in dirs:
        if not os.path.isdir(folder) or folder in sys.path:
            continue
        sys.path.append(folder)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            # editable installs point into folders the sandbox does not show
            if not name.endswith(".pth") or name.startswith("__editable__") or name == "distutils-precedence.pth":
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            for line in lines:
                if not line.strip() or line.startswith("#"):
                    continue
                if line.startswith(("import ", "import\t")):
                    try:
                        exec(line)  # as site.py does for .pth import lines
                    except Exception:
                        pass
                    continue
                extra = os.path.join(folder, line.rstrip())
                if os.path.exists(extra) and extra not in sys.path:
                    sys.path.append(extra)


def trimmed_traceback(exc: BaseException, path: str) -> str:
    """The traceback from the skill's first frame on, cut to the last few thousand characters."""
    import traceback  # only on failure: it costs start-up time on every call

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != path:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb if tb is not None else exc.__traceback__))
    return text if len(text) <= TRACEBACK_CHARS else "...\n" + text[-TRACEBACK_CHARS:]


def load(path: str, digest: str, module_name: str) -> ModuleType:
    with open(path, "rb") as f:
        data = f.read()
    if sha256(data).hexdigest() != digest:
        raise LookupError("the skill file changed after it was checked; it is checked again before the next step")
    module = ModuleType(module_name)
    module.__file__ = path
    sys.modules[module_name] = module  # dataclasses and pickle look their module up here
    exec(compile(data, path, "exec"), module.__dict__)
    return module


def main() -> None:
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # print() in the skill goes to stderr; stdout carries only the reply
    request = json.loads(sys.stdin.read())
    sys.stdin = open(os.devnull)  # a skill that reads input sees end-of-file, not our pipe
    add_site_dirs(request.get("site_dirs") or [])
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
