"""The REPL that ``tool/pyexe.py`` runs inside the sandbox: one request in, one reply out.

Run as a script (``python -I pyexe_driver.py OUTPUT_CAP HOST_PID_NS``); it imports nothing from
the project, because the project's folder is not visible in the sandbox. Frames on the original
stdin/stdout, moved to high descriptors at start so code does not hit them by accident: a
4-byte big-endian length, then UTF-8 JSON. Request ``{"code": str, "id": str}``; reply
``{"id", "stdout", "stderr", "value", "error", "truncated"}``, echoing the id, so the agent never
takes a frame the code wrote itself for the reply (it kills the process instead).

File descriptors 1 and 2 are pipes read by two threads, so output from the user's code *and*
from the programs it starts is captured, with head and tail kept up to the cap. After each
call, whatever the code left running is killed (``kill(-1)`` spares only PID 1 and this process;
it is used only when this process is in a PID namespace of its own).

SIGINT (the person's Ctrl-C, sent by the agent to this process only) raises ``KeyboardInterrupt``
in the running code, so only that code stops and the namespace survives; between calls it is
ignored, so a late one cannot end the REPL.
"""

from __future__ import annotations

import ast
import fcntl
import json
import linecache
import os
import resource
import signal
import struct
import sys
import threading
import traceback

VALUE_CAP = 10_000


class Capture:
    """Head and tail of a stream up to ``cap`` bytes; the rest counted (as in core.sandbox)."""

    def __init__(self, cap: int) -> None:
        self.head_cap, self.tail_cap = cap // 2, cap - cap // 2
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data[-self.tail_cap:]
            if len(self.tail) > self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        """The kept output as text; a cut falls between characters, never inside one."""
        if not self.truncated:
            return (self.head + self.tail).decode("utf-8", "replace")
        head, tail = whole_chars(self.head, self.tail)
        omitted = self.total - len(head) - len(tail)
        return (head.decode("utf-8", "replace") + f"\n[... {omitted} bytes of output omitted ...]\n"
                + tail.decode("utf-8", "replace"))


def whole_chars(head: bytes | bytearray, tail: bytes | bytearray) -> tuple[bytes, bytes]:
    """``head`` without a UTF-8 character cut at its end, ``tail`` without one cut at its start (as in core)."""
    end = len(head)
    for back in range(1, min(4, len(head)) + 1):
        byte = head[-back]
        if byte & 0xC0 != 0x80:  # the last character's first byte: is the character complete?
            need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            if back < need:
                end = len(head) - back
            break
    start = 0
    while start < min(3, len(tail)) and tail[start] & 0xC0 == 0x80:
        start += 1
    return bytes(head[:end]), bytes(tail[start:])


class Collector(threading.Thread):
    """Reads one redirected descriptor; feeds the current call's capture until that call's marker."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.cond = threading.Condition()
        self.capture: Capture | None = None
        self.marker = b""
        self.pending = b""
        self.done = False

    def begin(self, capture: Capture, marker: bytes) -> None:
        with self.cond:
            self.capture, self.marker, self.done = capture, marker, False
            leftover, self.pending = self.pending, b""
        if leftover:
            self._take(leftover)

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self._take(chunk)

    def _take(self, chunk: bytes) -> None:
        with self.cond:
            buf = self.pending + chunk
            self.pending = b""
            if self.capture is None or self.done or not self.marker:
                if self.capture is not None:
                    self.capture.feed(buf)
                return
            idx = buf.find(self.marker)
            if idx >= 0:
                self.capture.feed(buf[:idx])
                self.pending = buf[idx + len(self.marker):]
                self.done = True
                self.cond.notify_all()
                return
            keep = len(self.marker) - 1  # the marker may be split across two reads
            self.capture.feed(buf[: len(buf) - keep] if len(buf) > keep else b"")
            self.pending = buf[len(buf) - keep:] if len(buf) > keep else buf

    def wait(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.done, timeout=timeout)
            self.done = True  # late output goes to the next call


def read_frame(stream) -> dict | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (size,) = struct.unpack(">I", header)
    body = b""
    while len(body) < size:
        part = stream.read(size - len(body))
        if not part:
            return None
        body += part
    return json.loads(body.decode("utf-8"))


def write_frame(stream, obj: dict) -> None:
    body = json.dumps(obj).encode("utf-8")
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


def user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame of the user's code on (the driver's frames cut)."""
    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc))
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def execute(code: str, namespace: dict, cell: int) -> tuple[str | None, str | None]:
    """Run ``code``; (repr of the last expression's value or None, traceback text or None)."""
    filename = f"<cell-{cell}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        tree = ast.parse(code, filename=filename, mode="exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        # a SIGINT that arrives once the handler is back to SIG_IGN is dropped by the interpreter
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            exec(compile(tree, filename, "exec"), namespace)
            value = None if last is None else eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if value is None:
            return None, None
        namespace["_"] = value
        text = repr(value)
        if len(text) > VALUE_CAP:
            text = text[: VALUE_CAP // 2] + f" ... [{len(text) - VALUE_CAP} characters omitted] ... " + text[-VALUE_CAP // 2:]
        return text, None
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from user code are results too
        return None, user_traceback(exc)


def out_of_the_way(fd: int) -> int:
    """A close-on-exec copy of ``fd`` at a high number, away from the low ones code opens, reuses or guesses."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 1024 if soft == resource.RLIM_INFINITY or soft <= 0 else min(soft, 1024)
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(3, limit - 32))


def kill_leftovers(own_ns: bool) -> None:
    if not own_ns:
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def main() -> None:
    cap = int(sys.argv[1])
    own_ns = len(sys.argv) > 2 and os.readlink("/proc/self/ns/pid") != sys.argv[2]
    main_pid = os.getpid()
    proto_in = os.fdopen(out_of_the_way(0), "rb")
    proto_out = os.fdopen(out_of_the_way(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    collectors = []
    for fd in (1, 2):
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)
        collector = Collector(r)
        collector.start()
        collectors.append(collector)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big file is an error in the code, not our death
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the running code is interrupted (see execute)
    sys.path.insert(0, "")
    namespace: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    cell = 0
    while True:
        request = read_frame(proto_in)
        if request is None:
            return
        cell += 1
        captures = [Capture(cap), Capture(cap)]
        marker = b"\x00\x1bPYEXE-END-%d\x00" % cell
        for collector, capture in zip(collectors, captures):
            collector.begin(capture, marker)
        value, error = execute(request["code"], namespace, cell)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # also when the interrupt hit execute's own finally
        if os.getpid() != main_pid:
            os._exit(0)  # a process the user's code forked must never answer
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, collector in zip((1, 2), collectors):
            try:
                os.write(fd, marker)
            except OSError:
                pass
            collector.wait(timeout=2.0)
        kill_leftovers(own_ns)
        write_frame(proto_out, {"id": request.get("id"), "stdout": captures[0].text(), "stderr": captures[1].text(),
                                "value": value, "error": error,
                                "truncated": captures[0].truncated or captures[1].truncated,
                                "stdout_bytes": captures[0].total, "stderr_bytes": captures[1].total})


if __name__ == "__main__":
    main()
