"""The gateway to any OpenAI-compatible chat server: this project's, llama-server, vLLM, Ollama.

The main path uses only the OpenAI chat-completions API. Two extras are probed once and cached,
and are only ever used when present: a ``/tokenize`` endpoint at the server root (exact token
counts) and whatever the server says about its context window (see :meth:`context_length`).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import httpx

from core.errors import (ConfigError, ContextOverflow, GatewayError, Interrupted, ModelNotFound,
                         ModelUnavailable)
from core.gateway import StreamCallback, StreamEvent
from core.messages import Completion, Message
from core.tools import Tool
from gate.openai_wire import (StreamAssembler, as_chunk, completion_from_openai, message_from_openai,
                              message_to_openai, messages_to_openai)
from gate.transport import (RETRY_STATUS, Control, Retry, abort_on_stop, RetryPolicy, TokenCounter, Unreachable, decode_json,
                            estimate_tokens, iter_sse_data, retry_after_s, run_cancellable,
                            transport_failure, with_retries)

__all__ = ["OpenAICompatGateway", "message_to_openai", "messages_to_openai", "message_from_openai",
           "START_HINT"]

START_HINT = ("start one with `bash runsv.sh`, or give --model-url (AGENT_MODEL_URL) for another "
              "OpenAI-compatible engine")

#: servers that take ``return_progress`` and stream ``prompt_progress`` chunks
PROGRESS_KINDS = frozenset({"local-coder", "llama-server"})
#: Ollama's context when nothing says otherwise; it cuts longer prompts silently, so guess low
OLLAMA_FALLBACK_CTX = 2048
PROBE_TIMEOUT_S = 5.0

_OVERFLOW_CODES = {"context_length_exceeded", "exceed_context_size_error"}
# How llama-server, vLLM, Ollama and others word it when they give no code (lower case).
_OVERFLOW_WORDS = ("context_length_exceeded", "maximum context length", "exceeds the available context",
                   "exceed_context_size", "context size", "context window", "context length",
                   "prompt is too long", "input length exceeds", "too many tokens")


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


class OpenAICompatGateway:
    """:class:`core.gateway.ModelGateway` over the OpenAI chat-completions API (httpx, sync).

    Streams (SSE) when ``on_event`` is given, otherwise asks for one JSON reply. Tool calls come
    from native ``tool_calls`` or, when a server returns them as text, from the shared parser
    (only offered names; problems become ``ToolCall.error``). 429/502/503/504, timeouts and
    refused connections are retried with exponential backoff (``Retry-After`` honoured) as long
    as nothing was streamed yet.

    Cancellation: once ``cancel`` is set, :meth:`complete` raises
    :class:`core.errors.Interrupted` within about 50 ms, even while the server is silent; the
    partial answer is dropped (a cut-off reply and half-streamed tool calls are not safe to record
    or run). When streaming, the connection is shut down so the server stops generating; a call
    without ``on_event`` returns just as fast, but the server finishes that reply unread. Text
    already passed to ``on_event`` stays on the screen.

    ``model`` may be left out: the first id the server lists at ``/v1/models`` is used, asked for
    on first use.
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, *,
                 timeout_s: float = 600.0, max_retries: int = 3, temperature: float = 0.2,
                 retry: RetryPolicy | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # /tokenize, /props, /health and Ollama's /api live at the root, beside /v1
        self.root_url = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        self._model = model or ""
        self.temperature = temperature
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
                                    trust_env=not is_loopback(self.base_url))
        self._lock = threading.Lock()  # guards the probe caches below
        self._tokenize_body: Callable[[str], dict[str, Any]] | None | bool = None  # None: not probed; False: absent
        self._ctx: int | None = None
        self._ctx_known = False
        self._kind = ""  # "local-coder", "llama-server" (found by the context probe), else unknown
        self._counter = TokenCounter(self._count_text)

    # --- the contract --------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model id sent with each request (asked of the server once when not given)."""
        if not self._model:
            models = self.list_models()
            if not models:
                raise ModelNotFound(f"the server at {self.base_url} lists no models at /v1/models",
                                    hint="set AGENT_MODEL to the id the server expects")
            self._model = models[0]
        return self._model

    def complete(self, messages: Sequence[Message], tools: Sequence[Tool] = (), *,
                 max_tokens: int | None = None, temperature: float | None = None,
                 on_event: StreamCallback | None = None, cancel: threading.Event | None = None,
                 tool_choice: str | None = None) -> Completion:
        """One chat completion; see the class docstring for streaming, retries and cancellation."""
        if cancel is not None and cancel.is_set():
            raise Interrupted("interrupted before the model was called")
        allowed = frozenset(t.name for t in tools)
        stream = on_event is not None
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages_to_openai(messages),
            "temperature": self.temperature if temperature is None else temperature,
            "stream": stream,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if tools:
            body["tools"] = [t.spec() for t in tools]
            if tool_choice:
                body["tool_choice"] = tool_choice
        if stream:
            body["stream_options"] = {"include_usage": True}
            if self.sends_progress():
                body["return_progress"] = True  # llama-server's field; other engines are not sent it
        url = f"{self.base_url}/chat/completions"

        def attempt() -> Completion:
            if stream:
                assert on_event is not None
                return self._stream_once(url, body, allowed, on_event, cancel)
            reply = run_cancellable(lambda emit, control: self._post_once(url, body), lambda _: None, cancel)
            return completion_from_openai(reply, allowed, body["model"])

        return with_retries(attempt, self.retry, cancel, self._unavailable)

    def count_tokens(self, messages: Sequence[Message], tools: Sequence[Tool] = ()) -> int:
        """Tokens of the request: each message's role, content and tool-call JSON plus template
        overhead, counted by the server's ``/tokenize`` when it has one, else estimated."""
        return self._counter.request(messages, tools)

    def sends_progress(self) -> bool:
        """Whether streamed requests ask for prompt progress: only a server known to take the field.

        This project's server and llama.cpp's llama-server (found while asking for the context,
        :meth:`context_length`) send ``prompt_progress`` chunks; vLLM, OpenAI and others are never sent it.
        """
        with self._lock:
            return self._kind in PROGRESS_KINDS

    def context_length(self) -> int | None:
        """The context window the server reports, asked once; ``None`` when it does not say.

        Asked in turn: this project's ``/health`` (``n_ctx``), llama-server's ``/props``
        (``default_generation_settings.n_ctx``), vLLM's ``/v1/models`` (``max_model_len``), LM
        Studio's ``/api/v0/models`` (``loaded_context_length``), and Ollama's ``/api/ps`` /
        ``/api/show`` (``num_ctx``; else :data:`OLLAMA_FALLBACK_CTX`).
        """
        with self._lock:
            if self._ctx_known:
                return self._ctx
        try:
            found = self._probe_context()
        except Unreachable:
            return None  # the server may start later: ask again next time
        with self._lock:
            self._ctx, self._ctx_known = found, True
        return found

    # --- more than the contract ----------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Model ids the server lists at ``/v1/models``."""
        url = f"{self.base_url}/models"
        try:
            resp = self._client.get(url, timeout=PROBE_TIMEOUT_S * 2)
        except httpx.HTTPError as exc:
            failure = transport_failure(exc, f"GET {url}")
            if isinstance(failure, Unreachable):
                raise self._unavailable(failure) from None
            raise failure.error if isinstance(failure, Retry) else failure from None
        if resp.status_code >= 400:
            failure = self._http_error(resp, url)
            raise failure.error if isinstance(failure, Retry) else failure
        data = decode_json(resp.text, f"GET {url}")
        entries = data.get("data") or data.get("models") or [] if isinstance(data, dict) else []
        return [e.get("id") or e.get("name") for e in entries if isinstance(e, dict) and (e.get("id") or e.get("name"))]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "OpenAICompatGateway":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one exchange --------------------------------------------------------------------------

    def _post_once(self, url: str, body: Mapping[str, Any]) -> Any:
        try:
            resp = self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise transport_failure(exc, f"POST {url}") from None
        if resp.status_code >= 400:
            raise self._http_error(resp, url)
        reply = decode_json(resp.text, f"POST {url}")
        if isinstance(reply, dict) and "error" in reply and "choices" not in reply:
            raise self._error_from_body(reply, resp.status_code, url)
        return reply

    def _stream_once(self, url: str, body: Mapping[str, Any], allowed: frozenset[str],
                     on_event: StreamCallback, cancel: threading.Event | None) -> Completion:
        assembler = StreamAssembler(allowed, body["model"])
        shown = [False]

        def work(emit: Callable[[Any], None], control: Control) -> None:
            try:
                with self._client.stream("POST", url, json=body) as resp:
                    abort_on_stop(resp, control)
                    if resp.status_code >= 400:
                        resp.read()
                        raise self._http_error(resp, url)
                    if resp.headers.get("content-type", "").startswith("application/json"):
                        # a server that does not stream answers with one whole reply
                        resp.read()
                        emit(as_chunk(decode_json(resp.text, f"POST {url}")))
                        return
                    received = False
                    for data in iter_sse_data(resp, control):
                        if data.strip() == "[DONE]":
                            return
                        chunk = decode_json(data, f"POST {url} (stream)")
                        if isinstance(chunk, dict) and "error" in chunk and not chunk.get("choices"):
                            raise self._error_from_body(chunk, _stream_error_status(chunk), url)
                        received = True
                        emit(chunk)
                    if not received and not control.stopped.is_set():
                        raise Retry(GatewayError(f"POST {url}: the stream ended before any reply", retryable=True))
            except httpx.HTTPError as exc:
                raise transport_failure(exc, f"POST {url}") from None

        def deliver(events: list[tuple[str, Any]]) -> None:
            for kind, value in events:
                if kind == "progress":  # nothing on the screen yet: a retry shows nothing twice
                    on_event(StreamEvent("progress", done=value.processed, total=value.total, cached=value.cache,
                                         time_ms=value.time_ms))
                    continue
                shown[0] = True
                on_event(StreamEvent("text", text=value) if kind == "text" else StreamEvent("tool_call", name=value))

        try:
            run_cancellable(work, lambda chunk: deliver(assembler.feed(chunk)), cancel)
        except (Retry, Unreachable) as exc:
            if not shown[0]:
                raise
            # the answer is half on the screen: a retry would show it twice
            error = exc.error if isinstance(exc, Retry) else GatewayError(f"POST {url}: connection lost ({exc})")
            raise error from None
        completion, rest = assembler.close()
        deliver(rest)
        return completion

    # --- errors --------------------------------------------------------------------------------

    def _unavailable(self, exc: Exception) -> ModelUnavailable:
        return ModelUnavailable(f"no model server answers at {self.base_url}", hint=START_HINT)

    def _http_error(self, resp: httpx.Response, url: str) -> Exception:
        try:
            body = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = {"error": {"message": resp.text.strip()[:300] or resp.reason_phrase}}
        error = self._error_from_body(body if isinstance(body, dict) else {"error": str(body)}, resp.status_code, url)
        if resp.status_code in RETRY_STATUS and not isinstance(error, ContextOverflow):
            return Retry(error, retry_after_s(resp.headers))
        return error

    def _error_from_body(self, body: Mapping[str, Any], status: int, url: str) -> Exception:
        """One clear exception from an error body in the shapes OpenAI, llama-server, vLLM and
        Ollama (``{"error": "…"}``) and FastAPI (``{"detail": …}``) use."""
        err = body.get("error", body.get("detail", body))
        if isinstance(err, Mapping):
            message = str(err.get("message") or err.get("msg") or json.dumps(err)[:300])
            code, kind = str(err.get("code") or ""), str(err.get("type") or "")
        else:
            message, code, kind = str(err), "", ""
        message = " ".join(message.split())
        if code in _OVERFLOW_CODES or kind in _OVERFLOW_CODES or (
                status in (400, 413, 422, 500) and any(w in message.lower() for w in _OVERFLOW_WORDS)):
            return ContextOverflow(f"the prompt does not fit the model's context: {message}", status_code=status)
        if status in (401, 403):
            return ConfigError(f"the model server at {self.base_url} refused the request ({status}): {message}",
                               hint="set AGENT_API_KEY to the key the server expects")
        if status == 404:
            if "model" in message.lower():
                return ModelNotFound(f"the server at {self.base_url} does not serve model {self._model!r}: {message}",
                                     hint="set AGENT_MODEL to an id listed at /v1/models")
            return GatewayError(f"{url} was not found (404)", status_code=404,
                                hint="AGENT_MODEL_URL should be the server's OpenAI base, usually ending in /v1")
        retryable = status in RETRY_STATUS
        return GatewayError(f"the model server answered {status}: {message}", status_code=status, retryable=retryable)

    # --- tokens and context --------------------------------------------------------------------

    def _count_text(self, text: str) -> int:
        with self._lock:
            shape = self._tokenize_body
        if shape is None:
            return self._probe_tokenize(text)
        if shape is False:
            return estimate_tokens(text)
        try:
            resp = self._client.post(f"{self.root_url}/tokenize", json=shape(text), timeout=PROBE_TIMEOUT_S * 2)
            return _token_count(resp.json()) if resp.status_code == 200 else estimate_tokens(text)
        except (httpx.HTTPError, ValueError):
            return estimate_tokens(text)

    def _probe_tokenize(self, text: str) -> int:
        """Count ``text`` while finding the ``/tokenize`` body the server takes: llama.cpp's
        ``content``, else vLLM's ``prompt``; remembers the answer unless nothing answered."""
        shapes: list[Callable[[str], dict[str, Any]]] = [
            lambda t: {"content": t},
            lambda t: {"model": self._model, "prompt": t},
        ]
        for shape in shapes:
            try:
                resp = self._client.post(f"{self.root_url}/tokenize", json=shape(text), timeout=PROBE_TIMEOUT_S)
            except httpx.HTTPError:
                return estimate_tokens(text)  # not answering now: ask again next time
            if resp.status_code in (404, 405, 501):
                break
            try:
                count = _token_count(resp.json()) if resp.status_code == 200 else None
            except ValueError:
                break
            if count is not None:
                with self._lock:
                    self._tokenize_body = shape
                return count
        with self._lock:
            self._tokenize_body = False
        return estimate_tokens(text)

    def _get_json(self, url: str) -> Any:
        try:
            resp = self._client.get(url, timeout=PROBE_TIMEOUT_S)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(str(exc)) from None
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def _probe_context(self) -> int | None:
        health = self._get_json(f"{self.root_url}/health")
        if isinstance(health, dict):
            found = _positive_int(health.get("n_ctx")) or _positive_int(health.get("context_length"))
            if found:
                if "backend" in health and "queue" in health:  # this project's server (servr/app.py)
                    self._set_kind("local-coder")
                return found
        props = self._get_json(f"{self.root_url}/props")
        if isinstance(props, dict):
            settings = props.get("default_generation_settings") or {}
            found = _positive_int(settings.get("n_ctx")) or _positive_int(props.get("n_ctx"))
            if "default_generation_settings" in props:
                self._set_kind("llama-server")
            if found:
                return found
        models = self._get_json(f"{self.base_url}/models")
        if isinstance(models, dict):
            entries = [e for e in models.get("data") or () if isinstance(e, dict)]
            # the entry of the model in use; a server that serves one model answers to any name
            mine = [e for e in entries if e.get("id") == self._model] or (entries if len(entries) == 1 else [])
            for entry in mine:
                found = _positive_int(entry.get("max_model_len")) or _positive_int(entry.get("context_length"))
                if found:
                    return found
        lmstudio = self._get_json(f"{self.root_url}/api/v0/models")
        if isinstance(lmstudio, dict):
            for entry in lmstudio.get("data") or ():
                if isinstance(entry, dict) and entry.get("id") == self._model:
                    found = _positive_int(entry.get("loaded_context_length")) or _positive_int(entry.get("max_context_length"))
                    if found:
                        return found
        return self._probe_ollama()

    def constrains_calls(self) -> bool:
        """Whether ``tool_choice="required"`` is grammar-constrained here: this project's server and
        llama-server (found by the context probe) turn it into a grammar; others are not assumed to."""
        self.context_length()
        with self._lock:
            return self._kind in ("local-coder", "llama-server")

    def _set_kind(self, kind: str) -> None:
        with self._lock:
            self._kind = kind

    def _probe_ollama(self) -> int | None:
        running = self._get_json(f"{self.root_url}/api/ps")
        if not isinstance(running, dict):
            return None  # not Ollama
        for entry in running.get("models") or ():
            if isinstance(entry, dict) and entry.get("name") in (self._model, f"{self._model}:latest"):
                found = _positive_int(entry.get("context_length"))
                if found:
                    return found
        try:
            resp = self._client.post(f"{self.root_url}/api/show", json={"model": self._model}, timeout=PROBE_TIMEOUT_S)
            shown = resp.json() if resp.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            shown = {}
        for line in str(shown.get("parameters") or "").splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "num_ctx" and _positive_int(value.strip()):
                return _positive_int(value.strip())
        trained = [_positive_int(v) for k, v in (shown.get("model_info") or {}).items() if k.endswith(".context_length")]
        return min([t for t in trained if t] + [OLLAMA_FALLBACK_CTX])


def _stream_error_status(chunk: Mapping[str, Any]) -> int:
    """The HTTP status an error sent inside a 200 stream stands for (its ``code``, else 500)."""
    err = chunk.get("error")
    code = err.get("code") if isinstance(err, Mapping) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 500


def _positive_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _token_count(body: Any) -> int:
    """Tokens in a ``/tokenize`` reply: llama.cpp ``{"tokens": […]}`` or vLLM ``{"count": n}``."""
    if isinstance(body, dict):
        if isinstance(body.get("count"), int):
            return body["count"]
        if isinstance(body.get("tokens"), list):
            return len(body["tokens"])
    raise ValueError("not a /tokenize reply")
