"""Running skills: each call is a fresh sandboxed process (``runner_main.py``), JSON in and out.

The bytes that were validated are copied to a private temporary file, bound read-only at
``/run/agent/skill/<name>.py``, and the runner checks their hash before running them, so the
code that runs is the code that was validated: never the workspace file as it is at call time. Failures — an
exception, a value JSON cannot carry, a timeout, a killed process — come back as
:class:`core.errors.ToolError` with what happened; never as a success.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from core import sandbox
from core.errors import SandboxError, ToolError

RUNNER = Path(__file__).with_name("runner_main.py")
RUNNER_IN_SANDBOX = "/run/agent/skill_runner.py"
SKILL_DIR_IN_SANDBOX = "/run/agent/skill"
#: stdout kept for one reply; a value larger than this is refused rather than cut into invalid JSON
REPLY_BYTES = 4 << 20


@dataclass(frozen=True)
class CallOutcome:
    """One call's result: ``value`` when ``ok``, else ``kind`` and ``error``."""

    ok: bool
    value: Any = None
    kind: str = ""
    error: str = ""
    stderr: str = ""


class SkillRunner:
    """Runs skill functions in the sandbox of ``settings`` (or of ``policy``)."""

    def __init__(self, settings: Any = None, *, policy: sandbox.SandboxPolicy | None = None,
                 timeout_s: float | None = None) -> None:
        if policy is None:
            if settings is None:
                raise ValueError("SkillRunner needs settings or a sandbox policy")
            policy = sandbox.SandboxPolicy.from_settings(settings)
        self.policy = policy.replace(output_bytes=max(policy.output_bytes, REPLY_BYTES), python=True)
        self.timeout_s = float(timeout_s if timeout_s is not None else policy.timeout_s)
        #: the interpreter runs with -S; the runner adds these (the installed packages) itself
        self.site_dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]

    def run(self, file: str | os.PathLike[str], name: str, function: str,
            calls: Sequence[Mapping[str, Any]], *, data: bytes | None = None,
            cancel: threading.Event | None = None) -> list[CallOutcome]:
        """Run ``function`` of the skill file ``file`` once per argument set in ``calls``, in one process.

        With no calls the module is only loaded: one failed outcome comes back if that fails.

        ``data`` is the file's content as it was validated (read from ``file`` when not given); a
        file that no longer matches is refused. Setting ``cancel`` kills the process (and all it
        started) within about 0.1 s. Raises :class:`ToolError` when nothing ran, or it was stopped.
        """
        if data is None:
            data = Path(file).read_bytes()
        # the validated bytes run, from a private copy: never a path in the workspace, which
        # sandboxed code could have swapped (for a link, or other code) since it was checked
        staging = tempfile.mkdtemp(prefix="skill-run-")
        try:
            staged = Path(staging) / f"{name}.py"
            staged.write_bytes(data)
            confined = self.policy.confined
            inside = f"{SKILL_DIR_IN_SANDBOX}/{name}.py" if confined else str(staged)
            runner = RUNNER_IN_SANDBOX if confined else str(RUNNER)
            policy = self.policy
            if confined:
                policy = policy.replace(readonly_binds=policy.readonly_binds + ((str(RUNNER), RUNNER_IN_SANDBOX),
                                                                                   (str(staged), inside)))
            request = {"path": inside, "sha256": hashlib.sha256(data).hexdigest(), "function": function,
                       "module": f"skill_{name}", "calls": [dict(c) for c in calls], "site_dirs": self.site_dirs}
            try:
                result = sandbox.run([sys.executable, "-I", "-S", runner], policy, stdin=json.dumps(request),
                                     timeout_s=self.timeout_s, cancel=cancel)
            except SandboxError as exc:
                raise ToolError(f"cannot run skill {name}: {exc.message}", hint=exc.hint) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        stderr = result.stderr.strip()
        if result.killed_reason == "cancelled":
            raise ToolError(f"skill {name} was stopped by the person (Ctrl-C) after {result.duration_s:.2f} s; "
                            "its process and everything it started were killed"
                            + (f"; its stderr so far:\n{stderr[-1500:]}" if stderr else ""),
                            hint="wait for the person's next instruction")
        if result.timed_out:
            raise ToolError(f"skill {name} ran longer than {self.timeout_s:g} s and was killed",
                            hint="make it faster or give it less work per call (an endless loop?)")
        if result.stdout_bytes > REPLY_BYTES:  # stderr is only shown, so much of it is no reason to fail
            raise ToolError(f"skill {name} returned more than {REPLY_BYTES >> 20} MB of JSON",
                            hint="return less: a summary, or write the data to a file and return its path")
        try:
            reply = json.loads(result.stdout)
            outcomes = [CallOutcome(bool(r["ok"]), r.get("value"), r.get("kind", ""), r.get("error", ""), stderr)
                        for r in reply["results"]]
            load_error = reply.get("load_error")
        except (ValueError, KeyError, TypeError):
            why = result.killed_reason or f"exit status {result.exit_code}"
            if result.killed_reason is None and "MemoryError" in stderr:
                why = "out of memory"
            raise ToolError(f"skill {name} ended without a result ({why})" + (f":\n{stderr[-1500:]}" if stderr else ""),
                            hint="the process was stopped by a sandbox limit (time, memory, file size) or "
                                 "exited on its own (os._exit, a crash)") from None
        if not calls and load_error:
            return [CallOutcome(False, None, load_error.get("kind", ""), load_error.get("error", ""), stderr)]
        if len(outcomes) != len(calls):
            raise ToolError(f"skill {name} answered {len(outcomes)} of {len(calls)} calls",
                            hint="a skill must not write to the runner's output")
        return outcomes

    def call(self, file: str | os.PathLike[str], name: str, function: str, args: Mapping[str, Any],
             *, data: bytes | None = None, cancel: threading.Event | None = None) -> Any:
        """The value of one call; :class:`ToolError` with the trimmed traceback when it fails."""
        outcome = self.run(file, name, function, [args], data=data, cancel=cancel)[0]
        if outcome.ok:
            return outcome.value
        raise ToolError(failure_text(name, outcome), hint=failure_hint(outcome))


def failure_text(name: str, outcome: CallOutcome) -> str:
    if outcome.kind == "not_json":
        return f"skill {name} {outcome.error}"
    if outcome.kind == "changed":
        return f"skill {name} was not run: {outcome.error}"
    if outcome.kind == "import":
        return f"skill {name} failed while its module loaded:\n{outcome.error.rstrip()}"
    return f"skill {name} raised an exception:\n{outcome.error.rstrip()}"


def failure_hint(outcome: CallOutcome) -> str:
    if outcome.kind == "not_json":
        return "return only str, int, float, bool, None, lists and dicts of them (no NaN or infinity)"
    if outcome.kind == "changed":
        return "call it again in the next step"
    return "check the arguments; if the skill itself is wrong, fix the source and promote it again"
