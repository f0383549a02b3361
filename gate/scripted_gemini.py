"""A stand-in for Gemini's REST API on 127.0.0.1, answering ``generateContent`` from a script.

Point ``GEMINI_BASE_URL`` (or :class:`gate.gemini.GeminiGateway`'s ``base_url``) at
:attr:`ScriptedGemini.base_url`. Each ``:generateContent`` / ``:streamGenerateContent?alt=sse``
request takes the next reply:

- ``{"text": "…"}`` — a text answer;
- ``{"function_calls": [{"name": …, "args": {…}, "id": …}], "thought_signature": "…"}`` — function
  calls (``id`` and the signature are optional, as with the real API; ``text`` may come first);
- ``{"status": 429, "status_name": "RESOURCE_EXHAUSTED", "message": "…", "reason": "…",
  "retry_delay": "0s"}`` — a Google error body;
- ``{"block_reason": "SAFETY"}`` — the prompt refused (``promptFeedback``);
- ``"finish_reason"`` overrides the reply's (``"SAFETY"``, ``"MAX_TOKENS"``,
  ``"MALFORMED_FUNCTION_CALL"``…).

A wrong ``x-goog-api-key`` gets the real 400 ``API_KEY_INVALID`` body. ``:countTokens`` counts
words; ``GET models/{model}`` reports ``input_token_limit``. Requests are recorded in ``requests``.
"""

from __future__ import annotations

import json
import threading
from typing import Any, AsyncIterator, Mapping, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gate.local_server import LocalServer
from gate.scripted_server import fake_tokens


def google_error(status: int, status_name: str, message: str, reason: str | None = None,
                 retry_delay: str | None = None) -> dict[str, Any]:
    """An error body shaped like Google's (``google.rpc.Status``)."""
    details: list[dict[str, Any]] = []
    if reason:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                        "domain": "googleapis.com"})
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    return {"error": {"code": status, "message": message, "status": status_name, "details": details}}


class ScriptedGemini:
    """The stand-in; a context manager running a real uvicorn on 127.0.0.1."""

    def __init__(self, replies: Sequence[Mapping[str, Any]], *, api_key: str = "test-key",
                 input_token_limit: int = 1_048_576, chunk_chars: int = 5, port: int = 0) -> None:
        self.replies = list(replies)
        self.api_key = api_key
        self.input_token_limit = input_token_limit
        self.chunk_chars = max(1, chunk_chars)
        self.requests: list[dict[str, Any]] = []  # {"path", "body"} of each generate call
        self.count_requests: list[dict[str, Any]] = []
        self.unexpected = 0
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1beta/models/{rest:path}", self._models, methods=["GET", "POST"])])
        self._server = LocalServer(app, port=port)

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1beta"

    def start(self) -> "ScriptedGemini":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "ScriptedGemini":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _models(self, request: Request) -> Response:
        if request.headers.get("x-goog-api-key") != self.api_key:
            return JSONResponse(google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                                             "API_KEY_INVALID"), 400)
        model, _, method = request.path_params["rest"].partition(":")
        if request.method == "GET" and not method:
            return JSONResponse({"name": f"models/{model}", "inputTokenLimit": self.input_token_limit,
                                 "outputTokenLimit": 65_536, "supportedGenerationMethods": ["generateContent"]})
        body = await request.json()
        if method == "countTokens":
            self.count_requests.append(body)
            text = json.dumps(body.get("generateContentRequest", body))
            return JSONResponse({"totalTokens": len(fake_tokens(text))})
        if method not in ("generateContent", "streamGenerateContent"):
            return JSONResponse(google_error(404, "NOT_FOUND", f"method {method!r} not found"), 404)
        with self._lock:
            index = len(self.requests)
            self.requests.append({"path": request.url.path, "query": str(request.url.query), "body": body})
        if index >= len(self.replies):
            self.unexpected += 1
            return JSONResponse(google_error(500, "INTERNAL", f"scripted Gemini: no reply left for request "
                                                              f"#{index + 1} (the script has {len(self.replies)})"), 500)
        reply = self.replies[index]
        if "status" in reply:
            status = int(reply["status"])
            return JSONResponse(google_error(status, reply.get("status_name", "INTERNAL"),
                                             reply.get("message", f"scripted error {status}"),
                                             reply.get("reason"), reply.get("retry_delay")), status)
        usage = {"promptTokenCount": len(fake_tokens(json.dumps(body.get("contents", [])))),
                 "candidatesTokenCount": len(fake_tokens(reply.get("text", ""))) + 5 * len(reply.get("function_calls", [])),
                 "totalTokenCount": 0}
        if method == "streamGenerateContent":
            return StreamingResponse(self._chunks(reply, usage), media_type="text/event-stream")
        return JSONResponse(self._response(reply, self._parts(reply, reply.get("text", "")), usage, final=True))

    @staticmethod
    def _parts(reply: Mapping[str, Any], text: str) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        for i, call in enumerate(reply.get("function_calls") or ()):
            fc: dict[str, Any] = {"name": call["name"], "args": call.get("args", {})}
            if call.get("id"):
                fc["id"] = call["id"]
            part: dict[str, Any] = {"functionCall": fc}
            if i == 0 and reply.get("thought_signature"):
                part["thoughtSignature"] = reply["thought_signature"]
            parts.append(part)
        return parts

    @staticmethod
    def _response(reply: Mapping[str, Any], parts: list[dict[str, Any]], usage: dict[str, Any],
                  final: bool) -> dict[str, Any]:
        if reply.get("block_reason"):
            return {"promptFeedback": {"blockReason": reply["block_reason"]}, "usageMetadata": usage}
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if final:
            candidate["finishReason"] = reply.get("finish_reason", "STOP")
        out: dict[str, Any] = {"candidates": [candidate], "modelVersion": "scripted-gemini"}
        if final:
            out["usageMetadata"] = usage
        return out

    async def _chunks(self, reply: Mapping[str, Any], usage: dict[str, Any]) -> AsyncIterator[str]:
        text = reply.get("text", "")
        pieces = [text[i:i + self.chunk_chars] for i in range(0, len(text), self.chunk_chars)]
        if reply.get("block_reason"):
            yield f"data: {json.dumps(self._response(reply, [], usage, final=True))}\r\n\r\n"
            return
        for piece in pieces[:-1] if not reply.get("function_calls") else pieces:
            yield f"data: {json.dumps(self._response(reply, [{'text': piece}], usage, final=False))}\r\n\r\n"
        last_text = pieces[-1] if pieces and not reply.get("function_calls") else ""
        final_parts = self._parts({**reply, "text": ""}, last_text)
        yield f"data: {json.dumps(self._response(reply, final_parts, usage, final=True))}\r\n\r\n"
