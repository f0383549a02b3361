"""Servers that bend the OpenAI protocol in ways real engines do."""

from __future__ import annotations

from typing import Callable

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from core.errors import ContextOverflow, GatewayError
from core.messages import Message
from gate.local_server import LocalServer
from gate.openai_compat import OpenAICompatGateway
from gate.transport import RetryPolicy

ASK = [Message.user("hi")]


def serve(handler: Callable[[Request], Response]) -> LocalServer:
    async def endpoint(request: Request) -> Response:
        return handler(request)
    return LocalServer(Starlette(routes=[Route("/v1/chat/completions", endpoint, methods=["POST"])]))


def sse(*events: str) -> Callable[[Request], Response]:
    async def body():
        for event in events:
            yield event
    return lambda request: StreamingResponse(body(), media_type="text/event-stream")


def gateway(server: LocalServer, retries: int = 0) -> OpenAICompatGateway:
    return OpenAICompatGateway(f"{server.url}/v1", "m", retry=RetryPolicy(max_retries=retries, base_s=0.01))


def test_a_whole_reply_to_a_streaming_request_is_read_and_shown(tools):
    whole = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Reading.",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    events = []
    with serve(lambda request: JSONResponse(whole)) as server:
        completion = gateway(server).complete(ASK, tools, on_event=events.append)
    assert [(e.kind, e.text or e.name) for e in events] == [("text", "Reading."), ("tool_call", "read_file")]
    assert (completion.text, completion.tool_calls[0].id, completion.usage.completion_tokens) == ("Reading.", "call_1", 4)


def test_a_stream_that_ends_before_any_reply_is_retried_then_an_error():
    with serve(sse()) as server:
        with pytest.raises(GatewayError, match="the stream ended before any reply") as caught:
            gateway(server, retries=1).complete(ASK, on_event=lambda e: None)
    assert caught.value.retryable


def test_an_error_line_in_the_stream_is_read_like_an_error_body():
    body = '{"code": 400, "message": "the request exceeds the available context size", "type": "exceed_context_size_error"}'
    with serve(sse(f"error: {body}\n\n")) as server:
        with pytest.raises(ContextOverflow):
            gateway(server).complete(ASK, on_event=lambda e: None)


def test_an_error_chunk_after_some_text_is_raised_and_not_retried():
    text = 'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": null}]}\n\n'
    error = 'data: {"error": {"message": "the model crashed", "type": "server_error", "code": 500}}\n\n'
    calls = []

    def handler(request: Request) -> Response:
        calls.append(1)
        return sse(text, error)(request)

    with serve(handler) as server:
        with pytest.raises(GatewayError, match=r"^the model server answered 500: the model crashed$"):
            gateway(server, retries=2).complete(ASK, on_event=lambda e: None)
    assert len(calls) == 1


def test_a_reply_that_is_not_json_is_one_clear_line():
    with serve(lambda request: Response("<html>proxy error</html>", media_type="text/html")) as server:
        with pytest.raises(GatewayError, match=r"the server's reply is not JSON: '<html>proxy error</html>'"):
            gateway(server).complete(ASK)
