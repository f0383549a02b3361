"""The fetch tool against a real local server (reached only through a test-pinned host name)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from core.errors import ToolError
from sandbox_helpers import LocalSite, settings_for
from tool.fetch import address_problem, fetch_tool

PAGE = b"""<html><head><title>T</title><style>p {color: red}</style></head>
<body><h1>Release notes</h1><script>var secret = 1;</script>
<p>Version <b>2.0</b> adds <a href="/docs">docs</a>.</p><ul><li>one</li><li>two</li></ul></body></html>"""


def _respond(body: bytes, ctype: str, status: int = 200):
    def handler(h) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return handler


def _redirect(location: str):
    def handler(h) -> None:
        h.send_response(301)
        h.send_header("Location", location)
        h.end_headers()
    return handler


@pytest.fixture
def site():
    s = LocalSite({
        "/page": _respond(PAGE, "text/html; charset=utf-8"),
        "/data": _respond(json.dumps({"a": [1, 2], "b": "x"}).encode(), "application/json"),
        "/plain": _respond(b"just text\n", "text/plain"),
        "/blob": _respond(bytes(range(256)) * 40, "application/octet-stream"),
        "/missing-page": _respond(b"<p>gone</p>", "text/html", status=404),
        "/old": _redirect("/page"),
    })
    s.routes["/hop"] = _redirect(f"http://other.test:{s.port}/plain")
    yield s
    s.close()


@pytest.fixture
def fetch(tmp_path: Path):
    return fetch_tool(settings_for(tmp_path / "ws"),
                      pinned_hosts_for_tests={"site.test": "127.0.0.1", "other.test": "127.0.0.1"}).fn


def test_html_becomes_readable_markdown(fetch, site: LocalSite) -> None:
    result = fetch(url=f"http://site.test:{site.port}/page")
    assert result.ok and result.data["content_type"] == "text/html"
    body = result.content.split("\n\n", 1)[1]
    assert body == "# Release notes\n\nVersion **2.0** adds [docs](/docs).\n\n- one\n- two"


def test_json_and_text_come_back_as_they_are(fetch, site: LocalSite) -> None:
    data = fetch(url=f"http://site.test:{site.port}/data")
    assert json.loads(data.content.split("\n", 2)[2]) == {"a": [1, 2], "b": "x"}
    plain = fetch(url=f"http://site.test:{site.port}/plain")
    assert plain.content.endswith("\n\njust text\n")


def test_binary_content_is_described_not_dumped(fetch, site: LocalSite) -> None:
    result = fetch(url=f"http://site.test:{site.port}/blob")
    assert result.ok and "application/octet-stream content is not shown" in result.content
    assert "10.2 kB" in result.content and "\x00" not in result.content


def test_redirects_are_followed_and_reported(fetch, site: LocalSite) -> None:
    result = fetch(url=f"http://site.test:{site.port}/hop")
    assert result.ok and result.content.endswith("just text\n")
    assert f"redirects: 301 http://site.test:{site.port}/hop" in result.content
    assert fetch(url=f"http://site.test:{site.port}/old").data["url"] == f"http://site.test:{site.port}/page"


def test_an_error_status_is_not_ok(fetch, site: LocalSite) -> None:
    result = fetch(url=f"http://site.test:{site.port}/missing-page")
    assert not result.ok and "-> 404 Not Found" in result.content


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "http://user:pw@example.com/"])
def test_other_schemes_and_credentials_are_refused(fetch, url: str) -> None:
    with pytest.raises(ToolError):
        fetch(url=url)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::1", "64:ff9b::a00:1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_a_name_resolving_to_any_private_address_is_refused(tmp_path: Path) -> None:
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["93.184.216.34", "10.1.1.1"]

    result = fetch_tool(settings_for(tmp_path / "ws"), resolver=resolver).fn(url="http://mixed.example/")
    assert asked == ["mixed.example"]
    assert not result.ok and "refused: mixed.example is a private network address (10.1.1.1)" in result.content


def test_a_server_dripping_bytes_is_cut_off_at_the_timeout(tmp_path: Path) -> None:
    import threading

    stop = threading.Event()

    def drip(h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.end_headers()
        try:
            while not stop.wait(0.05):
                h.wfile.write(b"z")
                h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    site = LocalSite({"/drip": drip})
    try:
        tool = fetch_tool(settings_for(tmp_path / "ws"), timeout_s=1.0,
                          pinned_hosts_for_tests={"site.test": "127.0.0.1"})
        result = tool.fn(url=f"http://site.test:{site.port}/drip")
    finally:
        stop.set()
        site.close()
    assert result.ok and result.data["cut"] is True
    assert "stopped reading after 1 s: the server sends slowly" in result.content


def test_the_schema_is_valid(tmp_path: Path) -> None:
    from jsonschema import Draft202012Validator

    tool = fetch_tool(settings_for(tmp_path / "ws"))
    Draft202012Validator.check_schema(tool.parameters)
    assert not Draft202012Validator(tool.parameters).is_valid({"url": "https://x.org", "max_bytes": 0})
    assert tool.read_only
