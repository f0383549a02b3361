"""Schemas, errors, security and the queue, in-process (httpx's ASGI transport) and on a live server."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
from starlette.requests import ClientDisconnect

from servr.app import create_app
from servr.engines.llama_cpp import LlamaCppEngine
from servr_helpers import asgi, live_server, settings, wait_until

pytestmark = pytest.mark.slow

CHAT = {"model": "tiny-qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture()
def app(qwen_engine):
    made = create_app(settings(model="tiny-qwen"), qwen_engine)
    yield made
    made.state.server.scheduler.close()


def test_validation_error_is_400_openai_shape_not_422(app) -> None:
    r = asgi(app, "POST", "/v1/chat/completions", json={"model": "tiny-qwen", "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == "messages.0.role"


def test_malformed_json_is_400(app) -> None:
    r = asgi(app, "POST", "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_unknown_route_is_404_openai_shape(app) -> None:
    r = asgi(app, "GET", "/v2/models")
    assert r.status_code == 404 and "/v1" in r.json()["error"]["message"]


def test_tool_choice_naming_a_tool_not_offered_is_400(app) -> None:
    body = {**CHAT, "tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "b"}}}
    r = asgi(app, "POST", "/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice" and "'b'" in r.json()["error"]["message"]


def test_detokenize_out_of_range_is_400(app) -> None:
    r = asgi(app, "POST", "/detokenize", json={"tokens": [1, 10**7]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"


def test_api_key_guards_v1_but_not_health(qwen_engine) -> None:
    app = create_app(settings(model="tiny-qwen", api_key="s3cret"), qwen_engine)
    missing = asgi(app, "GET", "/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    wrong = asgi(app, "GET", "/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert asgi(app, "GET", "/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert asgi(app, "POST", "/tokenize", json={"content": "x"}).status_code == 401
    assert asgi(app, "GET", "/health").status_code == 200


def test_no_cors_unless_configured(qwen_engine) -> None:
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    plain = create_app(settings(model="tiny-qwen"), qwen_engine)
    assert "access-control-allow-origin" not in asgi(plain, "OPTIONS", "/v1/models", headers=headers).headers
    allowed = create_app(settings(model="tiny-qwen", cors_origins="http://ide.local"), qwen_engine)
    r = asgi(allowed, "OPTIONS", "/v1/models", headers={**headers, "Origin": "http://ide.local"})
    assert r.headers["access-control-allow-origin"] == "http://ide.local"


def test_two_apps_share_no_metrics(qwen_engine) -> None:
    a = create_app(settings(model="tiny-qwen"), qwen_engine)
    b = create_app(settings(model="tiny-qwen"), qwen_engine)
    asgi(a, "GET", "/v1/models")
    assert 'route="/v1/models"' in asgi(a, "GET", "/metrics").text
    assert 'route="/v1/models"' not in asgi(b, "GET", "/metrics").text


class _BrokenEngine(LlamaCppEngine):
    """The real engine with a generation that fails, as a driver bug would."""

    def generate(self, prompt, params, cancel):
        raise RuntimeError("driver exploded")


def test_internal_failure_is_500_that_says_not_to_retry(tiny_qwen_path) -> None:
    engine = _BrokenEngine(tiny_qwen_path, model_id="tiny-qwen", n_ctx=256)
    app = create_app(settings(model="tiny-qwen"), engine)
    try:
        with live_server(app) as url:
            r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 500
        assert r.headers["x-should-retry"] == "false"
        assert r.json()["error"]["type"] == "server_error"
    finally:
        engine.close()


def test_full_queue_is_503_with_retry_after_and_health_answers_meanwhile(smol_engine) -> None:
    # the real model, slow enough on a CPU that a long answer is still running while we look
    app = create_app(settings(queue_size=1, model_aliases="tiny-qwen"), smol_engine)
    long = {**CHAT, "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
            "max_tokens": 1500, "temperature": 0.8, "seed": 11, "stream": True,
            # the grammar allows the end only after 600 characters: the answer cannot end early
            "response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": {
                "type": "object", "properties": {"story": {"type": "string", "minLength": 600}}, "required": ["story"]}}}}
    with live_server(app) as url:
        with httpx.stream("POST", url + "/v1/chat/completions", json=long, timeout=60) as running:
            lines = running.iter_lines()  # held: a dropped iterator closes the connection
            assert next(line for line in lines if line.startswith("data: "))
            waiting_result: dict[str, int] = {}
            waiter = threading.Thread(target=lambda: waiting_result.update(
                status=httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=60).status_code))
            waiter.start()
            wait_until(lambda: httpx.get(url + "/health").json()["queue"]["waiting"] == 1, timeout=10)
            health = httpx.get(url + "/health").json()
            assert health["queue"] == {"waiting": 1, "capacity": 1, "generating": True}
            assert "servr_queue_depth 1.0" in httpx.get(url + "/metrics").text
            full = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
            assert full.status_code == 503
            assert full.headers["retry-after"] == "2"
            assert full.json()["error"]["code"] == "server_busy"
        waiter.join(60)  # leaving the stream cancelled the long generation; the waiting one ran
        assert waiting_result == {"status": 200}


def test_health_describes_the_engine(app) -> None:
    body = asgi(app, "GET", "/health").json()
    assert body["model"] == "tiny-qwen" and body["backend"] == "llamacpp" and body["n_ctx"] == 1024
    assert body["chat_template"] == "gguf" and body["queue"]["capacity"] == 16
    assert body["flash_attn"] is True
    assert json.dumps(body)  # plain JSON


def test_health_carries_what_start_up_adds(qwen_engine) -> None:
    app = create_app(settings(model="tiny-qwen"), qwen_engine, health_extra={"memory_plan": {"fits": True, "n_ctx": 1024}})
    assert asgi(app, "GET", "/health").json()["memory_plan"] == {"fits": True, "n_ctx": 1024}


def test_metrics_label_requests_by_route_template_so_unknown_paths_cannot_grow_it(app) -> None:
    for i in range(50):
        assert asgi(app, "GET", f"/no/such/path/{i}").status_code == 404
    asgi(app, "GET", "/v1/models/tiny-qwen")
    asgi(app, "GET", "/v1/models/other-model")
    text = asgi(app, "GET", "/metrics").text
    series = [line for line in text.splitlines() if line.startswith("servr_requests_total{")]
    assert 'servr_requests_total{route="unmatched",status="404"} 50.0' in series
    assert 'servr_requests_total{route="/v1/models/{model_id:path}",status="200"} 1.0' in series
    assert 'servr_requests_total{route="/v1/models/{model_id:path}",status="404"} 1.0' in series
    assert not any("/no/such" in line or "tiny-qwen" in line for line in series)


def test_stream_whose_response_cannot_start_is_cancelled(qwen_engine) -> None:
    # an ASGI 2.4 server tells the app the client is gone by failing ``send``: here the very first one,
    # so the body generator never runs (its own clean-up never happens) and the job must still be cancelled
    app = create_app(settings(model="tiny-qwen"), qwen_engine)
    state = app.state.server
    body = json.dumps({**CHAT, "max_tokens": 900, "stream": True, "temperature": 1.0, "seed": 3}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "root_path": "", "query_string": b"", "headers": [(b"content-type", b"application/json"),
                                                               (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        raise OSError("connection reset by peer")

    async def go() -> None:
        with pytest.raises(ClientDisconnect):  # what Starlette makes of the failed send
            await app(scope, receive, send)

    try:
        asyncio.run(go())
        assert 'servr_generations_cancelled_total 1.0' in state.metrics.render().decode()
        wait_until(lambda: not state.scheduler.busy and state.scheduler.depth == 0, timeout=10)
    finally:
        state.scheduler.close()
