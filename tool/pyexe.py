"""The ``pyexe`` tool: a persistent Python REPL in one sandboxed process per session.

Variables, imports and definitions persist between calls. The process runs
``tool/pyexe_driver.py`` with the agent's interpreter inside ``core.sandbox`` and speaks
length-prefixed JSON over its stdin/stdout. A call that overruns its timeout kills the process
(and everything it started); the next call starts a fresh one, and the reply says the state was
lost. ``reset`` does the same on purpose.

When the person presses Ctrl-C (the registry sets the call's ``cancel`` event), the driver gets
SIGINT: ``KeyboardInterrupt`` stops the running code, its output so far comes back and the
interpreter's state is kept. Code that does not stop within :data:`INTERRUPT_GRACE_S` (it
catches the exception, or is stuck in C) is killed with its whole sandbox, as on a timeout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import selectors
import signal
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core import sandbox
from core.errors import SandboxError, ToolError
from core.tools import Tool, ToolResult, object_schema

DRIVER = Path(__file__).with_name("pyexe_driver.py")
#: where the driver is bound read-only inside the sandbox (the project folder is not visible)
DRIVER_IN_SANDBOX = "/run/agent/pyexe_driver.py"
_MAX_REPLY = 64 << 20
#: how long interrupted code gets to stop on KeyboardInterrupt before the process is killed
INTERRUPT_GRACE_S = 1.0
#: how often a running call looks at its cancel event
_POLL_S = 0.05


class _Cancelled(Exception):
    pass


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


class _Garbled(Exception):
    """The driver's channel carried something that is not its reply (code wrote to it); the message says what."""


class PythonSession:
    """One persistent, sandboxed Python process; :meth:`tool` offers it to the model."""

    def __init__(self, settings: Any, *, policy: sandbox.SandboxPolicy | None = None) -> None:
        base = policy or sandbox.SandboxPolicy.from_settings(settings)
        # CPU seconds add up over a REPL's life, so only the per-call wall timeout bounds time
        limits = dataclasses.replace(base.limits, cpu_s=None)
        binds = base.readonly_binds + ((DRIVER, DRIVER_IN_SANDBOX),) if base.confined else base.readonly_binds
        self.policy = base.replace(limits=limits, readonly_binds=binds, python=True)
        self.timeout_s = base.timeout_s
        self._proc: sandbox.SandboxProcess | None = None
        self._lock = threading.Lock()

    # --- the process -----------------------------------------------------------------------------

    def _start(self) -> sandbox.SandboxProcess:
        driver = DRIVER_IN_SANDBOX if self.policy.confined else str(DRIVER)
        host_ns = os.readlink("/proc/self/ns/pid")
        argv = [sys.executable, "-I", "-u", driver, str(self.policy.output_bytes), host_ns]
        return sandbox.start(argv, self.policy)

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    def close(self) -> None:
        """End the process and everything it started."""
        with self._lock:
            self._stop()

    def __enter__(self) -> "PythonSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _driver_pid(self, proc: sandbox.SandboxProcess) -> int | None:
        """The host pid of the driver: the first process running it down the chain of first children.

        The chain is bwrap, the sandbox's PID 1, the driver (unconfined: the driver itself); the
        code's own processes are the driver's children, or orphans adopted *after* it by PID 1.
        """
        driver = (DRIVER_IN_SANDBOX if self.policy.confined else str(DRIVER)).encode()
        pid = proc.pid
        for _ in range(6):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[1:4] == [b"-I", b"-u", driver]:  # bwrap's own argv holds it later
                        return pid
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    children = f.read().split()
            except OSError:
                return None
            if not children:
                return None
            pid = int(children[0])
        return None

    def _interrupt(self, proc: sandbox.SandboxProcess) -> bool:
        """SIGINT to the driver (KeyboardInterrupt in the running code); False when it cannot be sent."""
        pid = self._driver_pid(proc)
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGINT)
        except OSError:
            return False
        return True

    def _read_exact(self, proc: sandbox.SandboxProcess, n: int, deadline: float, sel: selectors.BaseSelector,
                    cancel: threading.Event | None = None) -> bytes:
        fd = proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            if cancel is not None and cancel.is_set() and not buf:
                raise _Cancelled  # only before a frame starts: a reply being read is read whole
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout
            if not sel.select(timeout=min(left, _POLL_S if cancel is not None else 0.5)):
                if not proc.alive:
                    raise _Died
                continue
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise _Died
            buf += chunk
        return bytes(buf)

    def _roundtrip(self, code: str, timeout: float, cancel: threading.Event | None = None) -> tuple[dict[str, Any], bool]:
        """(the driver's reply, whether the code was interrupted on ``cancel``).

        Raises ``_Cancelled`` when the code could not be interrupted in time (the caller kills).
        """
        if self._proc is None:
            self._proc = self._start()
        proc = self._proc
        # the reply must echo this call's id, so a frame the code wrote itself is never taken for it
        call_id = secrets.token_hex(8)
        body = json.dumps({"code": code, "id": call_id}).encode("utf-8")
        try:
            proc.stdin.write(struct.pack(">I", len(body)) + body)
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Died from None
        deadline = time.monotonic() + timeout
        interrupted = False
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                try:
                    header = self._read_exact(proc, 4, deadline, sel, None if interrupted else cancel)
                    break
                except _Cancelled:
                    if not self._interrupt(proc):
                        raise
                    interrupted = True
                    deadline = min(deadline, time.monotonic() + INTERRUPT_GRACE_S)
                except (_Timeout, _Died):
                    if interrupted:  # it did not stop on KeyboardInterrupt, or SIGINT came before the code ran
                        raise _Cancelled from None
                    raise
            (size,) = struct.unpack(">I", header)
            if size > _MAX_REPLY:
                raise _Garbled(f"a frame of {size} bytes, more than the {_MAX_REPLY >> 20} MB a reply may have")
            raw = self._read_exact(proc, size, deadline + 5.0, sel)
        try:
            reply = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise _Garbled(f"not UTF-8 JSON: {exc}") from None
        if not isinstance(reply, dict) or reply.get("id") != call_id:
            raise _Garbled("JSON that is not the reply to this call")
        return reply, interrupted

    def _death_note(self) -> str:
        proc = self._proc
        if proc is None:
            return ""
        code = proc.wait(1.0)  # it closed its pipe: give the kernel a moment to report how it ended
        detail = ""
        if proc.stderr is not None and not proc.alive:
            try:
                os.set_blocking(proc.stderr.fileno(), False)
                detail = (proc.stderr.read(4000) or b"").decode("utf-8", "replace").strip()
            except (OSError, ValueError):
                detail = ""
        reason = f"exit status {code}" if code is not None else "unknown reason"
        return f"the Python process died ({reason})" + (f": {detail[-1500:]}" if detail else "")

    def execute(self, code: str, *, timeout_s: float | None = None,
                cancel: threading.Event | None = None) -> ToolResult:
        """Run ``code`` in the session; the result reads like a REPL transcript.

        Setting ``cancel`` stops the running code (see the module's docstring); the result says so.
        """
        timeout = self.timeout_s if timeout_s is None else min(float(timeout_s), self.timeout_s)
        with self._lock:
            start = time.monotonic()
            if cancel is not None and cancel.is_set():
                return ToolResult("Error: stopped by the person (Ctrl-C) before the code ran; the Python state is kept",
                                  ok=False, summary="stopped by the person", data={"interrupted": True})
            lost = ""
            if self._proc is not None and not self._proc.alive:
                lost = (f"[{self._death_note()} after the last call: this ran in a fresh interpreter, "
                        "earlier variables, imports and definitions are gone]")
                self._stop()
            try:
                reply, interrupted = self._roundtrip(code, timeout, cancel)
            except _Cancelled:
                self._stop()
                return ToolResult(
                    f"Error: stopped by the person (Ctrl-C) after {time.monotonic() - start:.2f} s: the code did not "
                    f"stop on KeyboardInterrupt within {INTERRUPT_GRACE_S:g} s, so the Python process was killed; "
                    "its output and the Python state were lost (variables, imports and definitions are gone)",
                    ok=False, summary="stopped by the person; state lost", data={"interrupted": True, "state_lost": True})
            except _Timeout:
                self._stop()
                return ToolResult.error(
                    f"the code ran longer than {timeout:g} s and was killed; the Python state was lost "
                    "(variables, imports and definitions are gone)",
                    hint="re-run the set-up you need, and split long work into shorter steps or run it with shell")
            except _Garbled as exc:
                self._stop()
                return ToolResult(
                    f"Error: the Python process sent a reply the agent could not read ({exc}), so it was killed; "
                    "the Python state was lost (variables, imports and definitions are gone)\n"
                    "Hint: the code probably wrote to a file descriptor it did not open (the REPL's own channel); "
                    "write output with print, and only to descriptors the code opened itself",
                    ok=False, summary="unreadable reply from the Python process; state lost",
                    data={"state_lost": True})
            except _Died:
                note = self._death_note()
                self._stop()
                return ToolResult.error(f"{note}; the Python state was lost",
                                        hint="the next call starts a fresh interpreter")
            except SandboxError as exc:
                return ToolResult.error(exc.message, exc.hint)
        result = self._result(reply, time.monotonic() - start)
        if interrupted:
            note = (f"[stopped by the person (Ctrl-C) after {time.monotonic() - start:.2f} s: the running code got "
                    "KeyboardInterrupt; the Python state (variables, imports, definitions) is kept]")
            result = ToolResult(note + "\n" + result.content, False, "stopped by the person",
                                {**result.data, "interrupted": True})
        if lost:
            return ToolResult(lost + "\n" + result.content, result.ok, result.summary, {**result.data, "state_lost": True})
        return result

    @staticmethod
    def _result(reply: dict[str, Any], duration: float) -> ToolResult:
        parts = []
        if reply.get("stdout"):
            parts.append(reply["stdout"].rstrip("\n"))
        if reply.get("stderr"):
            parts.append("[stderr]\n" + reply["stderr"].rstrip("\n"))
        if reply.get("value") is not None:
            parts.append(reply["value"])
        if reply.get("truncated"):
            parts.append(f"[output cut: {reply.get('stdout_bytes', 0)} bytes of stdout, "
                         f"{reply.get('stderr_bytes', 0)} of stderr; head and tail kept]")
        error = reply.get("error")
        if error:
            parts.append(error.rstrip("\n"))
        text = "\n".join(parts) if parts else "(no output)"
        data = {"duration_s": round(duration, 3), "truncated": bool(reply.get("truncated")), "error": bool(error)}
        last = error.strip().splitlines()[-1] if error else ""
        return ToolResult(text, ok=not error, summary=last[:120] if error else f"ran in {duration:.2f} s", data=data)

    def reset(self) -> None:
        with self._lock:
            self._stop()

    # --- the tool ----------------------------------------------------------------------------------

    def tool(self) -> Tool:
        def pyexe(code: str = "", reset: bool = False, *, cancel: threading.Event | None = None) -> ToolResult:
            if reset:
                self.reset()
                if not code.strip():
                    return ToolResult("Python state reset: a fresh interpreter starts with the next code.",
                                      summary="reset")
            if not code.strip():
                raise ToolError("no code given", hint="pass Python code in 'code' (or reset=true to restart)")
            result = self.execute(code, cancel=cancel)
            if reset and result.ok:
                return ToolResult("[fresh interpreter]\n" + result.content, result.ok, result.summary, result.data)
            return result

        return Tool(
            name="pyexe",
            description=("Run Python code in a persistent interpreter (variables, imports and definitions stay "
                         "between calls), sandboxed in the workspace like the shell. The value of a final "
                         "expression is shown, like a REPL. Processes it starts are killed after each call. "
                         f"Timeout {self.timeout_s:g} s per call; a timeout loses the state. "
                         "reset=true starts a fresh interpreter."),
            parameters=object_schema({
                "code": {"type": "string", "description": "Python code to run"},
                "reset": {"type": "boolean", "description": "restart the interpreter first (state is lost)"},
            }),
            fn=pyexe,
            timeout_s=self.timeout_s + 15,
        )
