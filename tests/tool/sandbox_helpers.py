"""Helpers for the sandbox, shell, pyexe and fetch tests: real bwrap, real servers, process checks."""

from __future__ import annotations

import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from boot.settings import load_settings
from core import sandbox


def require_bwrap() -> None:
    """Skip the calling test when bubblewrap cannot run on this machine (the reason says why)."""
    path, reason = sandbox.bwrap_problem()
    if path is None:
        pytest.skip(f"bubblewrap cannot run here: {reason}")


def settings_for(workspace: Path, **overrides: Any):
    workspace.mkdir(parents=True, exist_ok=True)
    return load_settings(workspace=str(workspace), **overrides)


def processes_with(marker: str) -> list[int]:
    """PIDs (any namespace) whose command line contains ``marker``."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def wait_no_process_with(marker: str, deadline_s: float = 5.0) -> list[int]:
    """Poll until no process carries ``marker``; return those still there at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        left = processes_with(marker)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.02)


def processes_working_in(folder: Path) -> list[int]:
    """PIDs (any namespace) whose current folder is ``folder``: what code run there left behind."""
    found = []
    target = os.path.realpath(folder)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == target:
                found.append(int(entry))
        except OSError:
            continue
    return found


class Listener:
    """A TCP socket listening on 127.0.0.1 that records whether anything connected."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connected(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


class LocalSite:
    """A real HTTP server on 127.0.0.1 with routes given as handler functions."""

    def __init__(self, routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]) -> None:
        self.hits: list[str] = []
        self.sent: dict[str, int] = {}
        self.routes = dict(routes)  # may be extended once the port is known
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                site.hits.append(self.path)
                route = site.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                route(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
