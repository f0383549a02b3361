"""A stand-in OpenAI-compatible server for end-to-end tests: it answers from a script.

Each ``POST /v1/chat/completions`` (streamed or not) takes the next reply of the script. A reply
is a dict (or, in-process, a callable ``request_body -> dict``):

- ``{"text": "…"}`` — plain text (write any markup you like into it);
- ``{"tool_calls": [{"name": …, "arguments": {…}}], "format": F}`` with ``F`` one of
  ``native`` (OpenAI ``tool_calls``, the default), ``tool_call`` (``<tool_call>`` text),
  ``fence`` (```` ```json ```` text), ``bare`` (a JSON object as the text) or ``tag``
  (``<tool name=…>``); ``"text"`` beside it comes first;
- ``{"status": 503, "message": "…", "code": "…", "headers": {"Retry-After": "0"}}`` — an error
  in OpenAI's shape (``"body": {…}`` sends that body instead, e.g. another engine's);
- ``"finish_reason"``, ``"usage"`` override those of the reply; ``"stall_after": N`` streams the
  first N characters and then holds the connection open until the client leaves;
- ``"progress": [[processed, total, cache, time_ms], …]`` streams llama-server's ``prompt_progress``
  chunks (``"choices": []``) before the answer, ``"progress_delay_s"`` apart, to a request that
  asked with ``"return_progress": true``, as llama-server does.

A request beyond the script gets a 500 whose message says so, and is counted in ``unexpected``.
Every request body is recorded (``requests``, or ``GET /_scripted/requests`` from a subprocess).
``tokenize=True`` serves llama.cpp's ``/tokenize`` (a fake word-piece tokenizer; ``"vllm"``: vLLM's
request and reply shape); ``n_ctx`` is
reported as ``max_model_len`` in ``/v1/models``. ``also_lists`` adds ids to ``/v1/models``; ``engine="llama-server"`` also answers llama-server's
``/props`` (``default_generation_settings.n_ctx``) and ``/health``, so a client takes it for one.

From a shell: ``python -m gate.scripted_server --script FILE.json [--port N]`` prints its base
URL on one line and serves until SIGINT/SIGTERM. FILE.json is a list of replies or
``{"replies": […], "model": …, "tokenize": …, "n_ctx": …, "api_key": …}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gate.local_server import LocalServer

Reply = Mapping[str, Any] | Callable[[dict[str, Any]], Mapping[str, Any]]
FORMATS = ("native", "tool_call", "fence", "bare", "tag")
_WORD = re.compile(r"\w+|[^\w\s]|\s+")
STALL_LIMIT_S = 60.0


def fake_tokens(text: str) -> list[int]:
    """A deterministic stand-in tokenizer: words, punctuation and runs of space, hashed."""
    return [zlib.crc32(piece.encode()) % 50_000 for piece in _WORD.findall(text)]


def call_text(calls: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """Tool calls written as a model would write them in text, in format ``fmt``."""
    objs = [{"name": c["name"], "arguments": c.get("arguments", {})} for c in calls]
    if fmt == "tool_call":
        return "".join(f"<tool_call>\n{json.dumps(o)}\n</tool_call>" for o in objs)
    if fmt == "fence":
        return "```json\n" + json.dumps(objs[0] if len(objs) == 1 else objs, indent=2) + "\n```"
    if fmt == "bare":
        return json.dumps(objs[0] if len(objs) == 1 else objs)
    if fmt == "tag":
        return "".join(f'<tool name="{o["name"]}">{json.dumps(o["arguments"])}</tool>' for o in objs)
    raise ValueError(f"unknown tool-call format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _error_body(message: str, kind: str = "invalid_request_error", code: Any = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class ScriptedServer:
    """The stand-in server; a context manager that starts a real uvicorn on 127.0.0.1."""

    def __init__(self, replies: Sequence[Reply], *, model: str = "scripted-model", tokenize: bool | str = False,
                 n_ctx: int | None = None, api_key: str | None = None, chunk_chars: int = 3,
                 port: int = 0, engine: str = "generic", also_lists: Sequence[str] = ()) -> None:
        self.replies = list(replies)
        self.model = model
        self.tokenize = tokenize
        self.n_ctx = n_ctx
        self.api_key = api_key
        self.chunk_chars = max(1, chunk_chars)
        self.engine = engine
        self.also_lists = list(also_lists)  # more ids in /v1/models (an embedding model, as servers list them)
        self.requests: list[dict[str, Any]] = []
        self.tokenize_requests: list[dict[str, Any]] = []
        self.unexpected = 0
        self.client_left = threading.Event()  # a stalled stream's client went away
        self._lock = threading.Lock()
        routes = [
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/tokenize", self._tokenize, methods=["POST"]),
            Route("/props", self._props, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/_scripted/requests", self._recorded, methods=["GET"]),
        ]
        self._server = LocalServer(Starlette(routes=routes), port=port)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (ending in ``/v1``)."""
        return f"{self._server.url}/v1"

    @property
    def root_url(self) -> str:
        return self._server.url

    def start(self) -> "ScriptedServer":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- endpoints -----------------------------------------------------------------------------

    def _refused(self, request: Request) -> Response | None:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse(_error_body("invalid API key", "authentication_error", "invalid_api_key"), 401)
        return None

    async def _models(self, request: Request) -> Response:
        entry: dict[str, Any] = {"id": self.model, "object": "model", "created": 0, "owned_by": "scripted"}
        if self.n_ctx:
            entry["max_model_len"] = self.n_ctx
        more = [{"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in self.also_lists]
        return self._refused(request) or JSONResponse({"object": "list", "data": [entry, *more]})

    async def _props(self, request: Request) -> Response:
        if self.engine != "llama-server":
            return JSONResponse({"detail": "Not Found"}, 404)
        return JSONResponse({"default_generation_settings": {"n_ctx": self.n_ctx or 4096}, "total_slots": 1})

    async def _health(self, request: Request) -> Response:
        if self.engine != "llama-server":
            return JSONResponse({"detail": "Not Found"}, 404)
        return JSONResponse({"status": "ok"})

    async def _tokenize(self, request: Request) -> Response:
        body = await request.json()
        self.tokenize_requests.append(body)
        if not self.tokenize:
            return JSONResponse({"detail": "Not Found"}, 404)
        if self.tokenize == "vllm":  # vLLM's shape: {"model", "prompt"} -> {"count", "tokens", ...}
            if not isinstance(body.get("prompt"), str):
                return JSONResponse({"object": "error", "message": "field 'prompt' required",
                                     "type": "BadRequestError", "code": 400}, 400)
            tokens = fake_tokens(body["prompt"])
            return JSONResponse({"count": len(tokens), "tokens": tokens, "max_model_len": self.n_ctx or 0})
        if not isinstance(body.get("content"), str):
            return JSONResponse(_error_body("'content' must be a string"), 400)
        return JSONResponse({"tokens": fake_tokens(body["content"])})

    async def _recorded(self, request: Request) -> Response:
        return JSONResponse({"requests": self.requests, "unexpected": self.unexpected})

    async def _chat(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused:
            return refused
        body = await request.json()
        with self._lock:
            index = len(self.requests)
            self.requests.append(body)
        if index >= len(self.replies):
            self.unexpected += 1
            return JSONResponse(_error_body(f"scripted server: no reply left for request #{index + 1} "
                                            f"(the script has {len(self.replies)})", "scripted_exhausted"), 500)
        reply = self.replies[index]
        if callable(reply):
            reply = reply(body)
        if "status" in reply:
            status = int(reply["status"])
            if "body" in reply:  # another engine's error shape, exactly as given
                return JSONResponse(reply["body"], status, headers=dict(reply.get("headers") or {}))
            return JSONResponse(_error_body(reply.get("message", f"scripted error {status}"),
                                            reply.get("type", "server_error" if status >= 500 else "invalid_request_error"),
                                            reply.get("code")), status, headers=dict(reply.get("headers") or {}))
        text, native = self._content(reply)
        usage = reply.get("usage") or {"prompt_tokens": len(fake_tokens(json.dumps(body.get("messages", [])))),
                                       "completion_tokens": len(fake_tokens(text)) + 8 * len(native)}
        usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        finish = reply.get("finish_reason") or ("tool_calls" if native else "stop")
        model = body.get("model") or self.model
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            progress = list(reply.get("progress") or ()) if body.get("return_progress") is True else []
            return StreamingResponse(self._chunks(request, model, text, native, finish,
                                                  usage if include_usage else None, reply.get("stall_after"),
                                                  progress, float(reply.get("progress_delay_s") or 0.0)),
                                     media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if native else "")}
        if native:
            message["tool_calls"] = native
        return JSONResponse({"id": f"chatcmpl-{index}", "object": "chat.completion", "created": int(time.time()),
                             "model": model, "usage": usage,
                             "choices": [{"index": 0, "message": message, "finish_reason": finish}]})

    @staticmethod
    def _content(reply: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        text = reply.get("text", "")
        calls = reply.get("tool_calls") or []
        fmt = reply.get("format", "native")
        if calls and fmt != "native":
            return text + call_text(calls, fmt), []
        native = [{"id": c.get("id") or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                   "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c.get("arguments"), str)
                                else json.dumps(c.get("arguments", {}))}}
                  for c in calls]
        return text, native

    async def _chunks(self, request: Request, model: str, text: str, native: list[dict[str, Any]],
                      finish: str, usage: dict[str, Any] | None, stall_after: int | None,
                      progress: Sequence[Sequence[float]] = (), progress_delay_s: float = 0.0) -> AsyncIterator[str]:
        def sse(delta: dict[str, Any], reason: str | None = None) -> str:
            chunk = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
            return f"data: {json.dumps(chunk)}\n\n"

        for processed, total, cache, time_ms in progress:  # llama-server's shape, before any text
            chunk = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [], "prompt_progress": {"total": int(total), "cache": int(cache),
                                                        "processed": int(processed), "time_ms": time_ms}}
            yield f"data: {json.dumps(chunk)}\n\n"
            if progress_delay_s:
                await asyncio.sleep(progress_delay_s)
        yield sse({"role": "assistant", "content": ""})
        n = self.chunk_chars
        shown = text if stall_after is None else text[:stall_after]
        for start in range(0, len(shown), n):
            yield sse({"content": shown[start:start + n]})
        if stall_after is not None:
            try:
                deadline = time.monotonic() + STALL_LIMIT_S
                while time.monotonic() < deadline and not self._server.stopping.is_set():
                    if await request.is_disconnected():
                        break
                    await asyncio.sleep(0.02)
            finally:
                self.client_left.set()
            return
        for i, call in enumerate(native):
            fn = call["function"]
            yield sse({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                       "function": {"name": fn["name"], "arguments": ""}}]})
            for start in range(0, len(fn["arguments"]), n):
                yield sse({"tool_calls": [{"index": i, "function": {"arguments": fn["arguments"][start:start + n]}}]})
        yield sse({}, finish)
        if usage is not None:
            yield f"data: {json.dumps({'id': 'chatcmpl-s', 'object': 'chat.completion.chunk', 'model': model, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"


def load_script(path: Path) -> dict[str, Any]:
    """A script file as keyword arguments for :class:`ScriptedServer` (``replies`` included)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"cannot read the script {path}: {exc}") from None
    if isinstance(data, list):
        data = {"replies": data}
    if not isinstance(data, dict) or not isinstance(data.get("replies"), list):
        raise SystemExit(f"{path}: expected a list of replies or an object with a 'replies' list")
    known = {"replies", "model", "tokenize", "n_ctx", "api_key", "chunk_chars", "engine", "also_lists"}
    unknown = set(data) - known
    if unknown:
        raise SystemExit(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gate.scripted_server",
                                     description="Serve scripted OpenAI chat replies on 127.0.0.1 (for tests).")
    parser.add_argument("--script", type=Path, required=True, help="JSON file: a list of replies or {'replies': [...], ...}")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: one the OS picks)")
    args = parser.parse_args(argv)
    server = ScriptedServer(port=args.port, **load_script(args.script))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with server:
        print(server.base_url, flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
