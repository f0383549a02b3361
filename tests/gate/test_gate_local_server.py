"""LocalServer: a server that does not start in time is stopped and lets go of its port."""

from __future__ import annotations

import socket
import time

import pytest

from gate.local_server import LocalServer


async def app(scope, receive, send):  # the smallest ASGI app: 200 "ok"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def connects(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_server_that_misses_its_start_deadline_is_stopped_and_frees_its_port():
    server = LocalServer(app)
    port = server.port
    uvicorn_server = server._server

    def slow_start(sockets):  # a server that never gets to "started" (timeout_s=0 alone is a race)
        while not uvicorn_server.should_exit:
            time.sleep(0.01)

    uvicorn_server.run = slow_start
    with pytest.raises(RuntimeError, match=f"the local server on port {port} did not start"):
        server.start(timeout_s=0)
    assert server.stopping.is_set()
    assert not connects(port)
    # the port is free again: a new server can take it
    with LocalServer(app, port=port) as again:
        assert again.port == port and connects(port)


def test_a_started_server_serves_until_stopped():
    with LocalServer(app) as server:
        assert connects(server.port)
    assert not connects(server.port)
