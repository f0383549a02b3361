"""The FastAPI app factory: OpenAI-compatible routes under ``/v1`` and the service routes beside them.

``create_app(settings, engine)`` builds everything it needs (queue, metrics registry, renderer,
embedder) and keeps it on ``app.state.server``: two apps in one process share nothing. The app
does not own the engine: whoever loaded it closes it.

Every request passes :class:`_HostOriginGuard` first: with no API key (the default) any web page
the person opens could otherwise drive the server, by DNS rebinding (a name of the attacker's
that resolves to 127.0.0.1: the browser then sends ``Host: evil.example``) or by a cross-origin
``fetch``. Accepted, like Ollama's ``OLLAMA_HOST``/``OLLAMA_ORIGINS``: a ``Host`` that is an IP
address, ``localhost`` (or ``*.localhost``), the bind address, or a name in
``AGENT_ALLOWED_HOSTS``; no ``Origin`` (programs, curl, SDKs), a loopback origin, or one in
``AGENT_CORS_ORIGINS``. ``*`` in either list turns that check off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import time
from urllib.parse import urlsplit
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse

from boot.settings import Settings
from servr import chat, completions, errors
from servr.chat_template import ChatRenderer
from servr.embeddings import Embedder, encode_vector
from servr.engines.base import Engine
from servr.errors import APIError, bad_request
from servr.generation import GenerationStream, watch_disconnect
from servr.metrics import CONTENT_TYPE, ServerMetrics
from servr.scheduler import Scheduler
from servr.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class ServerState:
    """Everything one app serves with."""

    settings: Settings
    engine: Engine
    scheduler: Scheduler
    metrics: ServerMetrics
    renderer: ChatRenderer
    embedder: Embedder
    model_ids: list[str]
    health_extra: dict[str, Any]
    started: float = field(default_factory=time.time)

    def check_model(self, model: str, *, embeddings: bool = False) -> str:
        """The id to answer with; 404 ``model_not_found`` listing what is served."""
        known = list(self.model_ids) + ([self.embedder.model_id] if embeddings else [])
        if model in known:
            return model
        raise APIError(404, f"The model '{model}' does not exist here. This server serves: {', '.join(known)}.",
                       param="model", code="model_not_found")


def _state(request: Request) -> ServerState:
    return request.app.state.server  # type: ignore[no-any-return]


def _require_key(request: Request) -> None:
    key = _state(request).settings.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.get_secret_value().encode()):
        what = "No API key was provided" if not header else "The API key is not correct"
        raise APIError(401, f"{what}. Send 'Authorization: Bearer <key>' with the key set in AGENT_API_KEY.",
                       code="invalid_api_key")


def _model_card(model_id: str, created: int, owner: str = "local") -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


class _GenerationResponse(StreamingResponse):
    """An SSE response that cancels its generation however the response ends.

    The job is queued before the response starts; when the client is gone before the body
    generator first runs (the server's first ``send`` fails, or the disconnect wins the race),
    the generator's own clean-up never runs, so the response does it.
    """

    def __init__(self, stream: GenerationStream, body: AsyncIterator[bytes]) -> None:
        super().__init__(body, media_type="text/event-stream", headers=SSE_HEADERS)
        self.generation = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.abandon()  # nothing once the generation has ended


async def _run(request: Request, stream: GenerationStream, make_body: Callable[[], Any], streaming: bool) -> Response:
    stream.submit()  # first: a full queue answers 503 before any body exists
    if streaming:
        try:
            return _GenerationResponse(stream, make_body())
        except BaseException:
            stream.abandon()
            raise
    watcher = asyncio.create_task(watch_disconnect(request.receive, stream))
    try:
        return JSONResponse(await make_body())
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _v1_routes() -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(_require_key)])

    @router.get("/models")
    async def list_models(request: Request) -> dict[str, Any]:
        s = _state(request)
        created = int(s.started)
        cards = [_model_card(m, created) for m in s.model_ids] + [_model_card(s.embedder.model_id, created)]
        return {"object": "list", "data": cards}

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        s = _state(request)
        return _model_card(s.check_model(model_id, embeddings=True), int(s.started))

    @router.post("/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Response:
        s = _state(request)
        model = s.check_model(req.model)
        plan = await asyncio.to_thread(chat.plan_chat, req, s.engine, s.renderer)
        stream = GenerationStream(s.scheduler, s.engine, plan.prompt, plan.params, plan.stops, s.metrics,
                                  progress=plan.return_progress)
        make = chat.stream_chunks if req.stream else chat.complete
        return await _run(request, stream, lambda: make(stream, plan, model), req.stream)

    @router.post("/completions")
    async def text_completions(req: CompletionRequest, request: Request) -> Response:
        s = _state(request)
        model = s.check_model(req.model)
        plan = await asyncio.to_thread(completions.plan_completion, req, s.engine)
        stream = GenerationStream(s.scheduler, s.engine, plan.prompt, plan.params, plan.stops, s.metrics)
        make = completions.stream_chunks if req.stream else completions.complete
        return await _run(request, stream, lambda: make(stream, plan, model), req.stream)

    @router.post("/embeddings")
    async def embeddings(req: EmbeddingRequest, request: Request) -> dict[str, Any]:
        s = _state(request)
        s.check_model(req.model, embeddings=True)
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts or any(not isinstance(t, str) for t in texts):
            raise bad_request("input must be a string or a non-empty list of strings (token arrays are not supported: "
                              "send the text)", param="input")
        vectors, tokens = await asyncio.to_thread(s.embedder.embed, texts)  # type: ignore[arg-type]
        if req.dimensions is not None and req.dimensions != vectors.shape[1]:
            raise bad_request(f"{s.embedder.model_id} makes {vectors.shape[1]}-dimensional vectors; "
                              f"dimensions={req.dimensions} is not supported", param="dimensions")
        data = [{"object": "embedding", "index": i, "embedding": encode_vector(v, req.encoding_format)}
                for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": s.embedder.model_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return router


def _service_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        s = _state(request)
        return {"status": "ok", "model": s.model_ids[0], "aliases": s.model_ids[1:], **s.engine.describe(),
                "embedding_model": s.embedder.model_id, "embedding_loaded": s.embedder.loaded,
                "queue": {"waiting": s.scheduler.depth, "capacity": s.scheduler.capacity,
                          "generating": s.scheduler.busy},
                "uptime_s": round(time.time() - s.started, 3), **s.health_extra}

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)

    @router.post("/tokenize", dependencies=[Depends(_require_key)])
    async def tokenize(req: TokenizeRequest, request: Request) -> dict[str, Any]:
        engine = _state(request).engine
        tokens = await asyncio.to_thread(engine.tokenize, req.content, add_special=req.add_special)
        if not req.with_pieces:
            return {"tokens": tokens}
        return {"tokens": [{"id": t, "piece": engine.detokenize([t])} for t in tokens]}

    @router.post("/detokenize", dependencies=[Depends(_require_key)])
    async def detokenize(req: DetokenizeRequest, request: Request) -> dict[str, Any]:
        engine = _state(request).engine
        bad = [t for t in req.tokens if not 0 <= t < engine.n_vocab]
        if bad:
            raise bad_request(f"token ids must be between 0 and {engine.n_vocab - 1} (got {bad[0]})", param="tokens")
        return {"content": await asyncio.to_thread(engine.detokenize, req.tokens)}

    return router


def _route_label(scope: Any) -> str:
    """The matched route's template (``/v1/models/{model_id:path}``), never the raw path.

    Labelling by the raw path would let anyone grow ``/metrics`` without limit with made-up URLs.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _host_name(value: str) -> str:
    """The host name of a ``Host`` header (``[::1]:8000`` → ``::1``), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _loopback_name(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost") or (_is_ip(name) and ipaddress.ip_address(name).is_loopback)


class _HostOriginGuard:
    """ASGI middleware refusing (403) a ``Host`` or an ``Origin`` that is not allowed (see the module doc)."""

    def __init__(self, app: Any, *, bind_host: str, allowed_hosts: list[str], allowed_origins: list[str]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {h.strip().lower() for h in allowed_hosts if h.strip()} | {bind_host.strip().lower()}
        self.any_origin = "*" in allowed_origins
        self.origins = {o.strip().rstrip("/").lower() for o in allowed_origins if o.strip()}

    def host_allowed(self, header: str | None) -> bool:
        if header is None or self.any_host:
            return True
        name = _host_name(header)
        return _is_ip(name) or _loopback_name(name) or name in self.hosts

    def origin_allowed(self, header: str | None) -> bool:
        if header is None or self.any_origin:
            return True
        origin = header.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and _loopback_name((parts.hostname or "").lower())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host, origin = headers.get("host"), headers.get("origin")
        if not self.host_allowed(host):
            message = (f"Host {host!r} is not allowed: this server answers loopback names and IP addresses "
                       "(a web page could otherwise reach it through DNS rebinding). To allow a name, add it "
                       "to AGENT_ALLOWED_HOSTS.")
            await _refuse(send, message, "host_not_allowed")
            return
        if not self.origin_allowed(origin):
            message = (f"Origin {origin!r} is not allowed: requests from web pages are accepted only from "
                       "loopback origins. To allow a site, add its origin to AGENT_CORS_ORIGINS.")
            await _refuse(send, message, "origin_not_allowed")
            return
        await self.app(scope, receive, send)


async def _refuse(send: Any, message: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _CountRequests:
    """ASGI middleware counting answered requests by route and status (streams included)."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.requests.labels(_route_label(scope), str(status["code"])).inc()


def create_app(settings: Settings, engine: Engine, *, health_extra: dict[str, Any] | None = None) -> FastAPI:
    """A fresh app serving ``engine`` as configured by ``settings``.

    ``health_extra`` is added to every ``/health`` answer (the start-up code passes the memory plan).
    """
    scheduler = Scheduler(settings.queue_size)
    metrics = ServerMetrics(lambda: scheduler.depth, lambda: scheduler.busy)
    model_ids = [engine.model_id] + [a for a in settings.model_aliases if a != engine.model_id]
    state = ServerState(settings, engine, scheduler, metrics, ChatRenderer(engine.chat_template()),
                        Embedder(settings.embed_model), model_ids, dict(health_extra or {}))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(scheduler.close)

    app = FastAPI(title="local-coder model server", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    errors.install(app)
    app.include_router(_v1_routes())
    app.include_router(_service_routes())
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_HostOriginGuard, bind_host=settings.host, allowed_hosts=list(settings.allowed_hosts),
                       allowed_origins=list(settings.cors_origins))
    app.add_middleware(_CountRequests, metrics=metrics)
    return app
