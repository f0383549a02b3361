"""The ``fetch`` tool: an HTTP(S) GET of a public web page, made readable for the model.

Server-side request forgery is the danger: a page (or the model) asking for
``http://127.0.0.1:8000/``, ``http://169.254.169.254/`` (cloud metadata) or a machine on the
LAN. So redirects are followed by hand, and on every hop the host is resolved, *every* address
it resolves to must be public (not loopback, private, link-local, shared, multicast, reserved or
unspecified; IPv4-mapped, 6to4, Teredo and NAT64 IPv6 addresses are judged by the IPv4 address
inside), and the connection goes to the address that was checked, with the ``Host`` header and
TLS server name of the original host, so a second DNS answer cannot swap in another address.
The body is streamed and reading stops at the byte cap.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import time
from typing import Any, Callable, Mapping

import httpx

from core.errors import ToolError
from core.tools import Tool, ToolResult, object_schema

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 2_000_000
HARD_MAX_BYTES = 20_000_000
USER_AGENT = "local-coder-agent/1.0 (+fetch tool)"
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
             ipaddress.ip_address("100.100.100.200")}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from, or ``None`` for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded)
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address (this machine)"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private network address"
    if ip.is_reserved or not ip.is_global:
        return "not a public internet address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class _Refused(ToolError):
    pass


def _checked_address(url: httpx.URL, resolve: Resolver, pinned: Mapping[str, str]) -> str:
    """The address to connect to for ``url``; raises when the host is or resolves to a non-public one."""
    host = url.host
    if not host:
        raise ToolError(f"{url} has no host", hint="pass a full URL like https://example.com/page")
    if host in pinned:  # test-only: a name pinned to an address by the caller, trusted as is
        return pinned[host]
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        try:
            addresses = resolve(host, port)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise ToolError(f"cannot resolve {host!r}: {exc}", hint="check the host name") from None
    if not addresses:
        raise ToolError(f"{host!r} resolves to no address", hint="check the host name")
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        problem = address_problem(ip)
        if problem:
            raise _Refused(f"refused: {host} is {problem} ({ip})",
                           hint="fetch only reaches public web addresses, never this machine or its network")
    return addresses[0]


def _html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup  # markdownify's parser; imported only when a page is HTML
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "iframe", "head"]):
        tag.decompose()
    text = MarkdownConverter(heading_style="ATX", bullets="-", strip=["img"]).convert_soup(soup)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _describe_size(n: int) -> str:
    return f"{n} bytes" if n < 10_000 else f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def fetch_tool(settings: Any, *, timeout_s: float = 20.0, resolver: Resolver | None = None,
               pinned_hosts_for_tests: Mapping[str, str] | None = None) -> Tool:
    """The ``fetch`` tool. ``pinned_hosts_for_tests`` maps a host name to the address to use
    without the public-address check; it exists so tests can reach a local server, and the
    agent never passes it.
    """
    del settings  # enable_fetch / offline mode are decided by the wiring that registers the tool
    resolve = resolver or system_resolver
    pinned = dict(pinned_hosts_for_tests or {})

    def fetch(url: str, max_bytes: int = DEFAULT_MAX_BYTES) -> ToolResult:
        try:
            return _get(url, max_bytes)
        except _Refused as exc:  # a refusal is an answer, not a failure of the tool
            return ToolResult.error(exc.message, exc.hint)

    def _get(url: str, max_bytes: int) -> ToolResult:
        cap = max(1, min(int(max_bytes), HARD_MAX_BYTES))
        try:
            current = httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError) as exc:
            raise ToolError(f"not a valid URL: {exc}", hint="pass a full URL like https://example.com/page") from None
        hops: list[str] = []
        with httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout_s,
                          headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}) as client:
            for _ in range(MAX_REDIRECTS + 1):
                if current.scheme not in ("http", "https"):
                    raise ToolError(f"unsupported scheme {current.scheme!r}", hint="only http:// and https:// URLs")
                if current.userinfo:
                    raise ToolError("URLs with a user name or password are refused", hint="remove the user:password@ part")
                address = _checked_address(current, resolve, pinned)
                target = current.copy_with(host=address)
                extensions = {"sni_hostname": current.host} if current.scheme == "https" else {}
                try:
                    with client.stream("GET", target, headers={"Host": current.netloc.decode("ascii")},
                                       extensions=extensions) as resp:
                        if resp.is_redirect and "location" in resp.headers:
                            hops.append(f"{resp.status_code} {current}")
                            current = current.join(resp.headers["location"])
                            continue
                        body, cut, slow = bytearray(), False, False
                        # httpx's timeout is per read; a server dripping bytes is stopped here
                        give_up = time.monotonic() + timeout_s
                        for chunk in resp.iter_bytes():
                            room = cap - len(body)
                            if len(chunk) >= room:
                                body += chunk[:room]
                                cut = len(chunk) > room or resp.headers.get("content-length", "") != str(len(body))
                                break
                            body += chunk
                            if time.monotonic() > give_up:
                                cut = slow = True
                                break
                        return _render(current, resp, bytes(body), cut, cap, hops, slow=slow, timeout_s=timeout_s)
                except httpx.TimeoutException:
                    raise ToolError(f"{current} did not answer within {timeout_s:g} s", hint="try again later") from None
                except httpx.HTTPError as exc:
                    raise ToolError(f"fetching {current} failed: {exc}", hint="check the URL") from None
        raise ToolError(f"more than {MAX_REDIRECTS} redirects", hint="fetch the final address directly")

    return Tool(
        name="fetch",
        description=("GET a public web page or file over HTTP(S). HTML is returned as readable markdown text, "
                     "JSON and plain text as they are; other content is described, not shown. Addresses on "
                     "this machine or a private network are refused."),
        parameters=object_schema({
            "url": {"type": "string", "description": "http:// or https:// address"},
            "max_bytes": {"type": "integer", "minimum": 1, "maximum": HARD_MAX_BYTES,
                          "description": f"stop reading after this many bytes (default {DEFAULT_MAX_BYTES})"},
        }, required=["url"]),
        fn=fetch,
        read_only=True,
        timeout_s=timeout_s * (MAX_REDIRECTS + 1) + 5,
    )


def _render(url: httpx.URL, resp: httpx.Response, body: bytes, cut: bool, cap: int, hops: list[str], *,
            slow: bool = False, timeout_s: float = 0.0) -> ToolResult:
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower() or "unknown"
    declared = resp.headers.get("content-length")
    head = [f"GET {url} -> {resp.status_code} {resp.reason_phrase}, {ctype}"]
    if hops:
        head.append("redirects: " + " -> ".join(hops))
    if slow:
        size_note = _describe_size(len(body)) + f" (stopped reading after {timeout_s:g} s: the server sends slowly)"
    else:
        size_note = _describe_size(len(body)) + (f" (stopped reading at the {cap}-byte cap)" if cut else "")
    encoding = resp.encoding or "utf-8"
    data = {"status": resp.status_code, "content_type": ctype, "bytes": len(body), "cut": cut, "url": str(url)}
    ok = resp.status_code < 400
    if ctype in ("text/html", "application/xhtml+xml"):
        text = _html_to_text(body.decode(encoding, "replace"))
        head.append(f"{size_note} of HTML, shown as text")
    elif ctype == "application/json" or ctype.endswith("+json"):
        text = body.decode(encoding, "replace")
        if not cut:
            try:
                text = json.dumps(json.loads(text), indent=1, ensure_ascii=False)
            except ValueError:
                pass
        head.append(size_note)
    elif ctype.startswith("text/") or ctype in ("application/xml", "application/javascript", "application/x-ndjson"):
        text = body.decode(encoding, "replace")
        head.append(size_note)
    else:
        total = f", {_describe_size(int(declared))} in all" if declared and declared.isdigit() else ""
        head.append(f"{size_note} read{total}; {ctype} content is not shown as text. "
                    "Download it with shell (if the network is on) to work with it.")
        text = ""
    summary = f"{resp.status_code} {ctype} {_describe_size(len(body))}: {str(url)[:80]}"
    return ToolResult("\n".join(head) + ("\n\n" + text if text else ""), ok=ok, summary=summary, data=data)
