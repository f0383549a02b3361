"""Reading a sandboxed command's output with a cap, and ending its process group.

Split from ``core/sandbox.py``. Output is read as it comes and only the head and the tail are
kept, so a command printing 100 MB costs the agent a few hundred KB.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from typing import Callable

_READ_CHUNK = 65536


class Capture:
    """Keeps the head and the tail of a stream up to ``cap`` bytes and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.head_cap = cap // 2
        self.tail_cap = cap - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

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
    """``head`` without a UTF-8 character cut at its end, ``tail`` without one cut at its start."""
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


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pump(proc: subprocess.Popen[bytes], data: bytes | None, out: Capture, err: Capture,
         deadline: float, *, confined: bool, kill: Callable[[], None],
         cancel: threading.Event | None = None) -> str | None:
    """Feed stdin, read stdout/stderr until both close; ``None``, or why it stopped first.

    Returns ``"timeout"`` when the deadline passed and ``"cancelled"`` when ``cancel`` was set
    (looked at every 0.1 s at most); the caller kills. ``kill`` ends what the command left
    holding the pipes after it exited.
    """
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    pending = memoryview(data) if data else None
    if proc.stdin is not None:
        if pending:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE, None)
        else:
            proc.stdin.close()
    exited_at: float | None = None
    group_killed = False
    grace = 2.0 if confined else 0.5
    try:
        while sel.get_map():
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                return "cancelled"
            if now >= deadline:
                return "timeout"
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > grace:
                # the command exited but something it started still holds the pipes: kill its
                # group; what escaped the group (unconfined only) is left writing to closed pipes
                if group_killed:
                    break
                kill()
                group_killed, exited_at = True, now
            for key, _ in sel.select(timeout=min(0.1, deadline - now)):
                if key.data is None:  # stdin
                    try:
                        n = os.write(key.fd, pending[:_READ_CHUNK])
                    except BlockingIOError:
                        n = 0
                    except OSError:  # the command closed its stdin: the rest is not wanted
                        n = len(pending)
                    pending = pending[n:]
                    if not pending:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                    continue
                chunk = os.read(key.fd, _READ_CHUNK)
                if chunk:
                    key.data.feed(chunk)
                else:
                    sel.unregister(key.fileobj)
        while True:  # the pipes closed; wait for the exit status, still open to a cancel
            if cancel is not None and cancel.is_set():
                return "cancelled"
            remaining = deadline - time.monotonic()
            try:
                proc.wait(timeout=max(min(remaining, 0.1), 0.01))
                return None
            except subprocess.TimeoutExpired:
                if remaining <= 0.1:
                    return "timeout"
    finally:
        sel.close()
