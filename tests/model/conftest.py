"""A local stand-in for the Hugging Face hub on 127.0.0.1, with faults a test can switch on.

It speaks the hub's layout: ``HEAD/GET /{repo}/resolve/{revision}/{filename}`` (the HEAD of a
large file answers 302 with ``X-Linked-Size``/``X-Linked-Etag`` like the real hub; the GET follows
the redirect to ``/cdn/…`` and honours ``Range``) and ``GET /api/models/{repo}/tree/{revision}``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

LFS_THRESHOLD = 1000  # files at least this big are served like LFS files (redirect + linked headers)


@dataclass
class FakeHub:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo, path) -> content
    cut_after: int | None = None  # close the connection after this many body bytes…
    cut_times: int = 0  # …on this many GETs (then serve normally); -1: every GET
    ignore_range: bool = False  # answer 200 with the whole file even when a Range is asked
    wrong_sha: bool = False  # advertise a sha256 that does not match
    busy_times: int = 0  # answer this many GETs of a file with 503 first
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    url: str = ""

    def add(self, repo: str, path: str, content: bytes) -> None:
        self.files[(repo, path)] = content

    def gets(self, path_suffix: str) -> list[str | None]:
        """The Range headers of the GETs of a file (None: no Range)."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith(path_suffix)]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the log
            return None

        def _lookup(self) -> tuple[str, bytes | None, bool]:
            path = unquote(urlsplit(self.path).path)
            for (repo, name), content in hub.files.items():
                for prefix, cdn in ((f"/{repo}/resolve/main/", False), (f"/cdn/{repo}/", True)):
                    if path == prefix + name:
                        return name, content, cdn
            return path, None, False

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            with lock:
                hub.requests.append(("HEAD", self.path, self.headers.get("Range")))
            name, content, _ = self._lookup()
            if content is None:
                self._send(404, {"Content-Length": "0"})
                return
            sha = hashlib.sha256(content + (b"x" if hub.wrong_sha else b"")).hexdigest()
            if len(content) >= LFS_THRESHOLD:
                repo = self.path.split("/resolve/")[0].lstrip("/")
                self._send(302, {"Location": f"/cdn/{repo}/{name}", "X-Linked-Size": str(len(content)),
                                 "X-Linked-Etag": f'"{sha}"', "Content-Length": "0"})
            else:
                self._send(200, {"Content-Length": str(len(content)), "ETag": '"gitblobsha"'})

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                hub.requests.append(("GET", self.path, self.headers.get("Range")))
            path = urlsplit(self.path).path
            if path.startswith("/api/models/") and "/tree/" in path:
                repo = unquote(path[len("/api/models/"):].split("/tree/")[0])
                entries = [{"type": "file", "path": n, "size": len(c),
                            **({"lfs": {"oid": hashlib.sha256(c).hexdigest(), "size": len(c)}}
                               if len(c) >= LFS_THRESHOLD else {})}
                           for (r, n), c in hub.files.items() if r == repo]
                if not entries:
                    self._send(404, {"Content-Length": "0"})
                    return
                body = json.dumps(entries).encode()
                self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)
                return
            name, content, cdn = self._lookup()
            if content is None:
                self._send(404, {"Content-Length": "0"})
                return
            if len(content) >= LFS_THRESHOLD and not cdn:
                repo = path.split("/resolve/")[0].lstrip("/")
                self._send(302, {"Location": f"/cdn/{repo}/{name}", "Content-Length": "0"})
                return
            with lock:
                busy = hub.busy_times > 0
                hub.busy_times -= 1 if busy else 0
            if busy:
                self._send(503, {"Content-Length": "0", "Retry-After": "0"})
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and not hub.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(content):
                    self._send(416, {"Content-Range": f"bytes */{len(content)}", "Content-Length": "0"})
                    return
            body = content[start:]
            headers = {"Content-Length": str(len(body)), "Content-Type": "application/octet-stream"}
            status = 200
            if start:
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
            with lock:
                cut = hub.cut_after is not None and hub.cut_times != 0
                if cut and hub.cut_times > 0:
                    hub.cut_times -= 1
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if cut:
                self.wfile.write(body[: hub.cut_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def refused_endpoint() -> str:
    """An address on 127.0.0.1 where nothing listens (connection refused): the hub while offline."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"
