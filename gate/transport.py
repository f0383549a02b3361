"""What every HTTP gateway shares: retries with backoff, prompt cancellation, SSE, token estimates.

A model call runs its HTTP exchange in a worker thread and hands what arrives to the caller's
thread through a queue, so ``on_event`` is always called on the caller's thread and a set
``cancel`` event is noticed within :data:`POLL_S` even while the server sends nothing (a long
prompt being read, a stalled connection). The worker closes its response at the next chunk,
which drops the connection so the server can stop generating.
"""

from __future__ import annotations

import email.utils
import json
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import httpx

from core.errors import GatewayError, Interrupted
from core.messages import Message
# re-exported: the gateways and their tests take the estimate from here
from core.tokens import CHARS_PER_TOKEN, estimate_tokens  # noqa: F401
from core.tools import Tool

#: how often the caller's thread looks at ``cancel`` while waiting for the server
POLL_S = 0.05

#: tokens a chat template adds around each message (ChatML: ``<|im_start|>role\n…<|im_end|>\n``)
MESSAGE_OVERHEAD = 4
#: tokens that start the reply (``<|im_start|>assistant\n``)
REPLY_PRIMING = 3

RETRY_STATUS = frozenset({429, 502, 503, 504})


def render_message(message: Message) -> str:
    """The text of a message as counted: role, content, and each tool call as JSON."""
    parts = [message.role, message.content]
    for call in message.tool_calls:
        parts.append(json.dumps({"name": call.name, "arguments": dict(call.arguments)}, ensure_ascii=False))
    return "\n".join(p for p in parts if p)


def render_tools(tools: Sequence[Tool]) -> str:
    """The tool specs as counted: their OpenAI JSON, as templates put them in the prompt."""
    return json.dumps([t.spec() for t in tools], ensure_ascii=False) if tools else ""


class TokenCounter:
    """Counts a request as the sum of its parts, caching each part's count.

    ``count_text`` does the counting (a server's tokenizer or :func:`estimate_tokens`). The
    per-part cache makes repeated counts of a growing conversation cost only the new messages.
    """

    MAX_CACHED = 4096

    def __init__(self, count_text: Callable[[str], int]) -> None:
        self._count_text = count_text
        self._cache: dict[str, int] = {}

    def text(self, text: str) -> int:
        if not text:
            return 0
        hit = self._cache.get(text)
        if hit is None:
            hit = self._count_text(text)
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            self._cache[text] = hit
        return hit

    def request(self, messages: Sequence[Message], tools: Sequence[Tool]) -> int:
        total = sum(self.text(render_message(m)) + MESSAGE_OVERHEAD for m in messages)
        if tools:
            total += self.text(render_tools(tools)) + MESSAGE_OVERHEAD
        return total + REPLY_PRIMING


def retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), if any."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``base_s * 2**attempt``, capped, or what the server asked."""

    max_retries: int = 3
    base_s: float = 0.5
    cap_s: float = 8.0
    max_server_wait_s: float = 60.0  # a Retry-After longer than this is not worth waiting for

    def delay(self, attempt: int, asked: float | None) -> float:
        if asked is not None:
            return min(asked, self.max_server_wait_s)
        return min(self.cap_s, self.base_s * 2 ** attempt) * (0.75 + random.random() / 2)


class Unreachable(Exception):
    """Nothing answered (connection refused, DNS, connect timeout): retried, then reported."""


class Retry(Exception):
    """A failure worth another try; ``error`` is what to raise when the tries are spent."""

    def __init__(self, error: Exception, asked_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.asked_s = asked_s


_DONE = object()


class Control:
    """What a worker sees of the caller: ``stopped`` is set on cancel, when ``on_stop`` hooks run."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_stop(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if not self.stopped.is_set():
                self._hooks.append(hook)
                return
        hook()

    def stop(self) -> None:
        with self._lock:
            self.stopped.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            try:
                hook()
            except OSError:
                pass  # the connection is already gone: that is what we wanted


def abort_on_stop(response: httpx.Response, control: Control) -> None:
    """Make ``control.stop()`` cut ``response``'s connection at once, even mid-read.

    Shutting the socket down wakes a read blocked in another thread (closing it would not), and
    the server sees the client leave and can stop generating.
    """
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        control.on_stop(lambda: sock.shutdown(socket.SHUT_RDWR))


def run_cancellable(work: Callable[[Callable[[Any], None], Control], Any],
                    on_item: Callable[[Any], None],
                    cancel: threading.Event | None) -> Any:
    """Run ``work(emit, control)`` in a worker thread; pass each emitted item to ``on_item`` here.

    Returns what ``work`` returns, re-raises what it raises, and raises
    :class:`core.errors.Interrupted` as soon as ``cancel`` is set (the worker's ``control`` is then
    stopped; see :func:`abort_on_stop`).
    """
    items: queue.Queue[Any] = queue.Queue()
    control = Control()
    outcome: dict[str, Any] = {}

    def runner() -> None:
        try:
            outcome["value"] = work(items.put, control)
        except BaseException as exc:  # handed to the caller's thread, which decides
            outcome["error"] = exc
        finally:
            items.put(_DONE)

    thread = threading.Thread(target=runner, name="gateway-http", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise Interrupted("interrupted while the model was answering")
            try:
                item = items.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _DONE:
                finished = True
                break
            on_item(item)
    finally:
        if not finished:
            control.stop()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def with_retries(attempt: Callable[[], Any], policy: RetryPolicy, cancel: threading.Event | None,
                 unreachable: Callable[[Exception], Exception]) -> Any:
    """Call ``attempt`` until it succeeds, retrying :class:`Retry` and :class:`Unreachable`.

    The wait between tries honours ``cancel``. When the tries are spent, a :class:`Retry` raises
    its ``error`` and :class:`Unreachable` raises ``unreachable(exc)``.
    """
    tries = 0
    while True:
        try:
            return attempt()
        except (Retry, Unreachable) as exc:
            if tries >= policy.max_retries:
                if isinstance(exc, Retry):
                    raise exc.error from None
                raise unreachable(exc) from None
            wait = policy.delay(tries, exc.asked_s if isinstance(exc, Retry) else None)
            tries += 1
            if cancel is not None:
                if cancel.wait(wait):
                    raise Interrupted("interrupted while waiting to retry the model call") from None
            else:
                time.sleep(wait)


def iter_sse_data(response: httpx.Response, control: Control) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent event stream, events of several lines joined."""
    data: list[str] = []
    for line in response.iter_lines():
        if control.stopped.is_set():
            return
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("error:"):  # older llama-server reports a failed stream this way
            data.append('{"error": ' + line[6:].strip() + "}")
        # "event:", "id:", "retry:" and ":" comment lines carry nothing a model reply needs
    if data:
        yield "\n".join(data)


def transport_failure(exc: httpx.HTTPError, what: str) -> Exception:
    """Sort an httpx failure: nothing answered, a retryable timeout, or a broken exchange."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return Unreachable(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return Retry(GatewayError(f"{what} timed out ({type(exc).__name__})", retryable=True,
                                  hint="raise AGENT_REQUEST_TIMEOUT_S if the model is just slow"))
    if isinstance(exc, httpx.RemoteProtocolError):
        return Retry(GatewayError(f"{what}: the server closed the connection ({exc})", retryable=True))
    return GatewayError(f"{what} failed: {exc}")


def decode_json(text: str, what: str) -> Any:
    """JSON from a server, or a :class:`GatewayError` saying the reply was not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        shown = text.strip().replace("\n", " ")[:200]
        raise GatewayError(f"{what}: the server's reply is not JSON: {shown!r}") from None
