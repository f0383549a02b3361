"""Shared pieces for the gateway tests: tools to offer, a fast retry policy, a port nobody uses."""

from __future__ import annotations

import socket

import pytest

from core.tools import Tool, object_schema
from gate.transport import RetryPolicy


def _tool(name: str, **props: dict) -> Tool:
    return Tool(name, f"the {name} tool", object_schema(props, list(props)), lambda **kw: "ok")


@pytest.fixture
def tools() -> list[Tool]:
    return [_tool("write_file", path={"type": "string"}, content={"type": "string"}),
            _tool("read_file", path={"type": "string"})]


@pytest.fixture
def fast_retry() -> RetryPolicy:
    return RetryPolicy(max_retries=2, base_s=0.01, cap_s=0.05)


@pytest.fixture
def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (nothing listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
