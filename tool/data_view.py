"""The ``data_view`` tool: look at CSV/TSV, Parquet and JSON/JSONL files in the workspace.

Operations: ``head``, ``tail``, ``shape``, ``columns`` (with types), ``describe`` and ``sample``.
The file is opened here, through the workspace confinement (never ``.env`` nor ``.agent/``),
and handed as standard input to ``tool/data_view_read.py``, which parses it in the sandbox
(``core.sandbox``), as skills run: an untrusted file meets pyarrow's C++ Parquet reader or a
100 MB JSON parser in a throw-away, confined process with a memory and time limit, never in the
agent's own process. The sandbox sees an empty workspace of its own, no network, nothing else.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from core import sandbox
from core.errors import SandboxError, ToolError
from core.paths import open_confined, refuse_protected, relative_to_workspace
from core.tools import Tool, ToolResult, object_schema
from tool.data_view_read import DataError, file_format

READER = Path(__file__).with_name("data_view_read.py")
READER_IN_SANDBOX = "/run/agent/data_view_read.py"
OPS = ("head", "tail", "shape", "columns", "describe", "sample")
MAX_N = 1000
#: the reply (a table of up to MAX_N rows) is JSON on stdout
REPLY_BYTES = 8 << 20
TIMEOUT_S = 60.0


def _policy(root: Path, settings: Any, confined: bool | None) -> sandbox.SandboxPolicy:
    """Limits for one parse: 4 GiB of address space, a minute of wall time (CPU seconds add up over
    pyarrow's threads, one per CPU), the default process cap, no network."""
    on = confined if confined is not None else (settings is None or getattr(settings, "sandbox", "on") != "off")
    timeout = min(float(getattr(settings, "tool_timeout_s", TIMEOUT_S)), TIMEOUT_S) if settings is not None else TIMEOUT_S
    # the workspace given here is a placeholder: each call makes an empty one of its own. It is the
    # agent's workspace, already accepted, because a folder such as /tmp is refused when it holds
    # the person's home or the agent's own checkout (as in tests and CI)
    return sandbox.SandboxPolicy(workspace=Path(root), confined=on, network=False, python=True,
                                 limits=sandbox.Limits(cpu_s=None), timeout_s=timeout,
                                 output_bytes=REPLY_BYTES, readonly_workspace=True)


def data_view_tool(root: Path, *, settings: Any = None, confined: bool | None = None) -> Tool:
    """The ``data_view`` tool confined to the workspace ``root``.

    The parse runs in the sandbox unless ``settings.sandbox`` is ``"off"`` (or ``confined`` is
    False): then in a process of its own, still out of the agent's.
    """
    policy = _policy(root, settings, confined)

    def data_view(path: str, op: str = "head", n: int = 10) -> ToolResult:
        if op not in OPS:
            raise ToolError(f"unknown op {op!r}", hint="use one of: " + ", ".join(OPS))
        if not 0 <= n <= MAX_N:
            raise ToolError(f"n must be between 0 and {MAX_N}", hint="ask for fewer rows")
        real = refuse_protected(root, path)  # never the secrets file or the agent's own state
        name = relative_to_workspace(root, real)
        try:
            file_format(real.name)  # by name only: refused before anything is opened
        except DataError as exc:
            raise ToolError(exc.message, hint=exc.hint) from None
        with open_confined(root, path, "rb") as f:
            reply = _parse(policy, f, name, op, n)
        if not reply.get("ok"):
            raise ToolError(str(reply.get("message")), hint=reply.get("hint"))
        kind, size, body = reply["kind"], reply["size"], reply["body"]
        text = f"{name} ({kind}, {size} bytes): {op}\n{body}"
        return ToolResult(text, summary=f"{op} of {name}", data={"path": name, "op": op, "format": kind})

    return Tool(
        name="data_view",
        description=("Inspect a data file in the workspace (CSV/TSV, Parquet, JSON, JSONL) without loading it whole: "
                     "op=head|tail|sample (n rows), shape (rows x columns), columns (names and types), "
                     "describe (count, nulls, mean, std, min, max, unique, top per column)."),
        parameters=object_schema({
            "path": {"type": "string", "description": "file path relative to the workspace"},
            "op": {"type": "string", "enum": list(OPS), "description": "what to show (default head)"},
            "n": {"type": "integer", "minimum": 0, "maximum": MAX_N, "description": "rows for head/tail/sample (default 10)"},
        }, required=["path"]),
        fn=data_view,
        read_only=True,
    )


def _parse(policy: sandbox.SandboxPolicy, f: Any, name: str, op: str, n: int) -> dict[str, Any]:
    """The reader's JSON reply for the open file ``f``; ToolError when the parse did not finish."""
    request = json.dumps({"name": name, "op": op, "n": n})
    scratch = tempfile.mkdtemp(prefix="data-view-")
    try:
        run = policy.replace(workspace=Path(scratch))
        if run.confined:
            run = run.replace(readonly_binds=((str(READER), READER_IN_SANDBOX),))
        reader = READER_IN_SANDBOX if run.confined else str(READER)
        try:
            result = sandbox.run([sys.executable, "-I", reader, request], run, stdin=f)
        except SandboxError as exc:
            raise ToolError(f"cannot read {name}: {exc.message}", hint=exc.hint) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.timed_out:
        raise ToolError(f"reading {name} took longer than {policy.timeout_s:g} s and was stopped",
                        hint="look at a part of it with shell (head, tail) instead")
    try:
        reply = json.loads(result.stdout)
        if isinstance(reply, dict):
            return reply
    except ValueError:
        pass
    why = result.killed_reason or f"exit status {result.exit_code}"
    if "MemoryError" in result.stderr or "std::bad_alloc" in result.stderr:
        why = "out of memory"
    raise ToolError(f"reading {name} failed in the sandbox ({why})" + (f": {result.stderr.strip()[-500:]}"
                                                                       if result.stderr.strip() else ""),
                    hint="the file may be damaged, or too large for data_view; look at it with shell instead")
