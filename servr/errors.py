"""OpenAI error bodies for every failure: ``{"error": {"message", "type", "param", "code"}}``.

One handler per kind of failure: our own :class:`APIError`, FastAPI's request validation
(malformed JSON included: 400, not FastAPI's 422 ``detail`` shape), Starlette's HTTP errors
(unknown route, wrong method), and anything unexpected (500, ``x-should-retry: false``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """A failure the client gets as an OpenAI error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def context_exceeded(n_ctx: int, prompt_tokens: int, max_tokens: int | None) -> APIError:
    if max_tokens is None:
        detail = f"your prompt is {prompt_tokens} tokens"
        asked = prompt_tokens
    else:
        detail = f"{prompt_tokens} in the prompt, {max_tokens} for the completion"
        asked = prompt_tokens + max_tokens
    return APIError(400, f"This model's maximum context length is {n_ctx} tokens. However, you requested {asked} "
                         f"tokens ({detail}). Shorten the prompt or lower max_tokens.",
                    param="messages", code="context_length_exceeded")


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        message = f"We could not parse the JSON body of your request ({ctx.get('error', 'invalid JSON')})."
        return APIError(400, message, code="invalid_json").response()
    if tuple(first.get("loc", ())) == ("body",):
        return APIError(400, "The request body must be a JSON object (send it with Content-Type: application/json).",
                        code="invalid_json").response()
    param = _loc(tuple(first.get("loc", ())))
    where = f" at '{param}'" if param else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = f"Invalid request{where}: {first.get('msg', 'invalid value')}{more}."
    return APIError(400, message, param=param or None, code="invalid_value").response()


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        err = APIError(404, "Unknown route. The API is under /v1 (models, chat/completions, completions, embeddings); "
                            "beside it /health, /metrics, /tokenize and /detokenize.", code="not_found")
    elif exc.status_code == 405:
        err = APIError(405, f"Method not allowed: {exc.detail}", code="method_not_allowed")
    else:
        err = APIError(exc.status_code, str(exc.detail), type="invalid_request_error")
    err.headers.update(exc.headers or {})
    return err.response()


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error", exc_info=exc)
    err = APIError(500, f"The server failed while handling the request ({type(exc).__name__}); retrying will not help. "
                        "See the server log.", type="server_error", code="internal_error",
                   headers={"x-should-retry": "false"})
    return err.response()


def install(app: FastAPI) -> None:
    """Route every failure of ``app`` to an OpenAI error body."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
