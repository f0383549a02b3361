"""The gateway to Google Gemini through its native REST API (httpx; no SDK).

Used only when the person asks (``--gemini``); it never switches provider by itself. The key
travels in the ``x-goog-api-key`` header, never in a URL, so it cannot leak into an error line.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Mapping, Sequence

import httpx

from core.errors import Interrupted, ModelUnavailable
from core.gateway import StreamCallback, StreamEvent
from core.messages import Completion, Message
from core.tools import Tool
from gate.gemini_wire import ReplyAssembler, contents_from_messages, error_from_gemini, function_declarations
from gate.transport import (Control, Retry, RetryPolicy, TokenCounter, abort_on_stop,
                            decode_json, estimate_tokens, iter_sse_data, run_cancellable, transport_failure,
                            with_retries)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
PROBE_TIMEOUT_S = 10.0


class GeminiGateway:
    """:class:`core.gateway.ModelGateway` over ``generateContent`` / ``streamGenerateContent``.

    Streams (``?alt=sse``) when ``on_event`` is given. Quota (429) and server (5xx) errors are
    retried with backoff, honouring Gemini's ``RetryInfo`` delay; a bad key, an unknown model and
    a safety block are one clear line each. Cancellation works as in
    :class:`gate.openai_compat.OpenAICompatGateway`: :class:`core.errors.Interrupted` within
    about 50 ms, the partial answer dropped. Thought signatures Gemini attaches to function calls
    are kept (per gateway) and sent back with them, as Gemini 3 requires; calls it did not make
    (history from the local model) get the documented skip value on Gemini 3 models.
    """

    def __init__(self, api_key: str, model: str = "gemini-2.5-flash", base_url: str = DEFAULT_BASE_URL, *,
                 timeout_s: float = 600.0, max_retries: int = 3, temperature: float = 0.2,
                 retry: RetryPolicy | None = None) -> None:
        self.model = model.removeprefix("models/")
        self.base_url = base_url.rstrip("/")
        self.temperature = temperature
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self._client = httpx.Client(headers={"x-goog-api-key": api_key},
                                    timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)))
        self._lock = threading.Lock()
        self._signatures: dict[str, str] = {}
        self._native_ids: set[str] = set()
        self._made_ids: set[str] = set()
        self._ctx: int | None = None
        self._ctx_known = False
        self._count_exact = True  # until :countTokens fails for good
        self._counted: dict[str, int] = {}
        self._estimate = TokenCounter(estimate_tokens)

    @property
    def _model_url(self) -> str:
        return f"{self.base_url}/models/{self.model}"

    def _body(self, messages: Sequence[Message], tools: Sequence[Tool], *, temperature: float | None = None,
              max_tokens: int | None = None, generation: bool = True, tool_choice: str | None = None) -> dict[str, Any]:
        with self._lock:
            signatures, native, made = dict(self._signatures), set(self._native_ids), set(self._made_ids)
        contents, system = contents_from_messages(messages, signatures, native, made,
                                                  skip_signature=self.model.startswith("gemini-3"))
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        if tools:
            body["tools"] = [{"functionDeclarations": function_declarations(tools)}]
            if tool_choice == "required":
                body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY"}}
        if generation:
            config: dict[str, Any] = {"temperature": self.temperature if temperature is None else temperature}
            if max_tokens is not None:
                config["maxOutputTokens"] = max_tokens
            body["generationConfig"] = config
        return body

    def complete(self, messages: Sequence[Message], tools: Sequence[Tool] = (), *,
                 max_tokens: int | None = None, temperature: float | None = None,
                 on_event: StreamCallback | None = None, cancel: threading.Event | None = None,
                 tool_choice: str | None = None) -> Completion:
        """One ``generateContent`` call; see the class docstring."""
        if cancel is not None and cancel.is_set():
            raise Interrupted("interrupted before the model was called")
        body = self._body(messages, tools, temperature=temperature, max_tokens=max_tokens, tool_choice=tool_choice)
        allowed = frozenset(t.name for t in tools)
        stream = on_event is not None
        url = f"{self._model_url}:streamGenerateContent?alt=sse" if stream else f"{self._model_url}:generateContent"

        def attempt() -> Completion:
            assembler = ReplyAssembler(allowed, self.model)
            shown = [False]

            def deliver(events: list[tuple[str, str]]) -> None:
                for kind, value in events:
                    shown[0] = True
                    if on_event is not None:
                        on_event(StreamEvent("text", text=value) if kind == "text"
                                 else StreamEvent("tool_call", name=value))

            try:
                run_cancellable(lambda emit, control: self._exchange(url, body, stream, emit, control),
                                lambda chunk: deliver(assembler.feed(chunk)), cancel)
            except Retry as exc:
                if shown[0]:
                    raise exc.error from None  # half the answer is on the screen already
                raise
            completion = assembler.close()
            with self._lock:
                self._signatures.update(assembler.signatures)
                self._native_ids.update(assembler.native_ids)
                self._made_ids.update(assembler.made_ids)
            return completion

        return with_retries(attempt, self.retry, cancel, self._unavailable)

    def _exchange(self, url: str, body: Mapping[str, Any], stream: bool,
                  emit: Callable[[Any], None], control: Control) -> None:
        try:
            with self._client.stream("POST", url, json=body) as resp:
                abort_on_stop(resp, control)
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from_gemini(resp.status_code, _json_or_text(resp), self.model)
                if not stream:
                    resp.read()
                    emit(decode_json(resp.text, "Gemini"))
                    return
                for data in iter_sse_data(resp, control):
                    chunk = decode_json(data, "Gemini (stream)")
                    if isinstance(chunk, dict) and "error" in chunk:
                        raise error_from_gemini(int(chunk["error"].get("code") or 500), chunk, self.model)
                    emit(chunk)
        except httpx.HTTPError as exc:
            raise transport_failure(exc, "Gemini") from None

    def _unavailable(self, exc: Exception) -> ModelUnavailable:
        return ModelUnavailable(f"cannot reach Gemini at {self.base_url} ({exc})",
                                hint="check the network connection, or GEMINI_BASE_URL")

    def count_tokens(self, messages: Sequence[Message], tools: Sequence[Tool] = ()) -> int:
        """Gemini's own count (``:countTokens``, remembered per request), else the estimate."""
        body = self._body(messages, tools, generation=False)
        key = json.dumps(body, sort_keys=True)
        with self._lock:
            if key in self._counted:
                return self._counted[key]
            exact = self._count_exact
        if exact:
            request = {"generateContentRequest": {"model": f"models/{self.model}", **body}}
            try:
                resp = self._client.post(f"{self._model_url}:countTokens", json=request, timeout=PROBE_TIMEOUT_S)
                if resp.status_code == 200 and isinstance(resp.json().get("totalTokens"), int):
                    total = resp.json()["totalTokens"]
                    with self._lock:
                        if len(self._counted) > 256:
                            self._counted.clear()
                        self._counted[key] = total
                    return total
                if resp.status_code in (400, 404, 405):
                    with self._lock:
                        self._count_exact = False
            except (httpx.HTTPError, ValueError):
                pass
        return self._estimate.request(messages, tools)

    def context_length(self) -> int | None:
        """``inputTokenLimit`` from ``models/{model}``, asked once."""
        with self._lock:
            if self._ctx_known:
                return self._ctx
        try:
            resp = self._client.get(self._model_url, timeout=PROBE_TIMEOUT_S)
            limit = resp.json().get("inputTokenLimit") if resp.status_code == 200 else None
        except (httpx.ConnectError, httpx.ConnectTimeout):
            return None  # ask again once the network is back
        except (httpx.HTTPError, ValueError, AttributeError):
            limit = None
        with self._lock:
            self._ctx = limit if isinstance(limit, int) and limit > 0 else None
            self._ctx_known = True
        return self._ctx

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "GeminiGateway":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_or_text(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return {"error": {"message": resp.text.strip()[:300] or resp.reason_phrase}}
