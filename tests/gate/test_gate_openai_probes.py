"""What the OpenAI-compatible gateway asks beyond the OpenAI API: /tokenize and the context size."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.messages import Message, ToolCall
from gate.local_server import LocalServer
from gate.openai_compat import OLLAMA_FALLBACK_CTX, OpenAICompatGateway
from gate.scripted_server import ScriptedServer, fake_tokens
from gate.transport import CHARS_PER_TOKEN, MESSAGE_OVERHEAD, REPLY_PRIMING, estimate_tokens, render_message, render_tools

CHAT = [Message.system("You are terse."), Message.user("Count these words, please."),
        Message.assistant("", [ToolCall("read_file", {"path": "a.py"}, id="call_1")]),
        Message.tool("call_1", "read_file", "x = 1\n")]


def exact(messages, tools=()) -> int:
    total = sum(len(fake_tokens(render_message(m))) + MESSAGE_OVERHEAD for m in messages)
    if tools:
        total += len(fake_tokens(render_tools(tools))) + MESSAGE_OVERHEAD
    return total + REPLY_PRIMING


def estimated(messages, tools=()) -> int:
    total = sum(estimate_tokens(render_message(m)) + MESSAGE_OVERHEAD for m in messages)
    if tools:
        total += estimate_tokens(render_tools(tools)) + MESSAGE_OVERHEAD
    return total + REPLY_PRIMING


# --- /tokenize -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [True, "vllm"], ids=["llama.cpp", "vllm"])
def test_tokens_are_counted_by_the_servers_tokenizer_when_it_has_one(tools, shape):
    with ScriptedServer([], tokenize=shape) as server:
        count = OpenAICompatGateway(server.base_url, "m").count_tokens(CHAT, tools)
    assert count == exact(CHAT, tools) != estimated(CHAT, tools)


def test_tokenize_is_asked_at_the_server_root_in_llama_cpp_shape():
    with ScriptedServer([], tokenize=True) as server:
        OpenAICompatGateway(server.base_url, "m").count_tokens(CHAT[1:2])
    assert server.tokenize_requests == [{"content": "user\nCount these words, please."}]


def test_each_message_is_tokenized_once_and_then_remembered():
    with ScriptedServer([], tokenize=True) as server:
        gateway = OpenAICompatGateway(server.base_url, "m")
        gateway.count_tokens(CHAT)
        asked = len(server.tokenize_requests)
        gateway.count_tokens(CHAT + [Message.user("one more")])
    assert asked == len(CHAT)
    assert len(server.tokenize_requests) == asked + 1


def test_without_tokenize_the_estimate_is_used_and_the_probe_is_not_repeated(tools):
    with ScriptedServer([], tokenize=False) as server:
        gateway = OpenAICompatGateway(server.base_url, "m")
        first = gateway.count_tokens(CHAT, tools)
        gateway.count_tokens([Message.user("something new")])
    assert first == estimated(CHAT, tools)
    assert len(server.tokenize_requests) == 1  # one 404, remembered


def test_the_estimate_is_used_while_no_server_answers_and_tokenize_is_found_later(free_port):
    gateway = OpenAICompatGateway(f"http://127.0.0.1:{free_port}/v1", "m")
    assert gateway.count_tokens(CHAT[:2]) == estimated(CHAT[:2])
    with ScriptedServer([], tokenize=True, port=free_port):
        assert gateway.count_tokens(CHAT[2:]) == exact(CHAT[2:])


def test_the_estimate_errs_towards_more_tokens():
    assert CHARS_PER_TOKEN <= 3.25  # at or below the densest text measured by bench/gate_token_estimate.py
    assert estimate_tokens("x" * 32) == 10 and estimate_tokens("x" * 33) == 11 and estimate_tokens("") == 0


# --- context length ----------------------------------------------------------------------------

class Engine:
    """A server answering the info endpoints some engine has, counting what was asked."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.asked: Counter[str] = Counter()
        self.routes = routes
        app = Starlette(routes=[Route("/{path:path}", self.answer, methods=["GET", "POST"])])
        self.server = LocalServer(app)

    async def answer(self, request: Request) -> JSONResponse:
        key = (request.method, "/" + request.path_params["path"])
        self.asked[key[1]] += 1
        if key not in self.routes:
            return JSONResponse({"error": "not found"}, 404)
        body = self.routes[key]
        return JSONResponse(body(await request.json()) if callable(body) else body)

    def __enter__(self) -> "Engine":
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"


def test_context_length_from_this_projects_health():
    with Engine({("GET", "/health"): {"status": "ok", "model": "qwen", "n_ctx": 8192}}) as engine:
        assert OpenAICompatGateway(engine.base_url, "qwen").context_length() == 8192


def test_context_length_from_llama_server_props():
    routes = {("GET", "/health"): {"status": "ok"},
              ("GET", "/props"): {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1}}
    with Engine(routes) as engine:
        assert OpenAICompatGateway(engine.base_url, "any").context_length() == 4096


def test_context_length_from_vllm_models_for_the_model_in_use():
    models = {"object": "list", "data": [{"id": "other", "max_model_len": 1000},
                                         {"id": "Qwen/Qwen2.5-Coder-7B-Instruct", "max_model_len": 32768}]}
    with Engine({("GET", "/v1/models"): models}) as engine:
        gateway = OpenAICompatGateway(engine.base_url, "Qwen/Qwen2.5-Coder-7B-Instruct")
        assert gateway.context_length() == 32768


def test_context_length_from_lm_studio_loaded_model():
    models = {"data": [{"id": "qwen2.5-coder-7b-instruct", "max_context_length": 32768, "loaded_context_length": 8192}]}
    with Engine({("GET", "/api/v0/models"): models}) as engine:
        assert OpenAICompatGateway(engine.base_url, "qwen2.5-coder-7b-instruct").context_length() == 8192


def test_context_length_from_ollama_running_model():
    ps = {"models": [{"name": "qwen2.5-coder:7b", "context_length": 16384}]}
    with Engine({("GET", "/api/ps"): ps}) as engine:
        assert OpenAICompatGateway(engine.base_url, "qwen2.5-coder:7b").context_length() == 16384


def test_context_length_from_ollama_num_ctx_parameter():
    show = {"parameters": "stop \"<|im_end|>\"\nnum_ctx 12288", "model_info": {"qwen2.context_length": 32768}}
    with Engine({("GET", "/api/ps"): {"models": []}, ("POST", "/api/show"): show}) as engine:
        assert OpenAICompatGateway(engine.base_url, "qwen2.5-coder:7b").context_length() == 12288


def test_ollama_without_num_ctx_gets_the_cautious_default():
    show = {"parameters": "", "model_info": {"qwen2.context_length": 32768}}
    with Engine({("GET", "/api/ps"): {"models": []}, ("POST", "/api/show"): show}) as engine:
        assert OpenAICompatGateway(engine.base_url, "qwen2.5-coder:7b").context_length() == OLLAMA_FALLBACK_CTX


def test_context_length_is_none_when_the_server_does_not_say_and_asked_once():
    with Engine({("GET", "/v1/models"): {"data": [{"id": "m"}]}}) as engine:
        gateway = OpenAICompatGateway(engine.base_url, "m")
        assert gateway.context_length() is None
        assert gateway.context_length() is None
    assert engine.asked["/health"] == 1 and engine.asked["/props"] == 1


def test_context_length_is_asked_once_and_remembered():
    with Engine({("GET", "/health"): {"n_ctx": 2048}}) as engine:
        gateway = OpenAICompatGateway(engine.base_url, "m")
        assert [gateway.context_length() for _ in range(3)] == [2048] * 3
    assert engine.asked["/health"] == 1


def test_context_length_is_none_while_no_server_answers_and_found_once_one_does(free_port):
    gateway = OpenAICompatGateway(f"http://127.0.0.1:{free_port}/v1", "m")
    assert gateway.context_length() is None
    with ScriptedServer([], n_ctx=4096, port=free_port):
        assert gateway.context_length() == 4096
