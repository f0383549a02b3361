"""The Qwen path with a tiny random-weight Qwen2 GGUF: template, tool prompt, parsing, FIM, grammar."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from servr import chat
from servr.chat_template import ChatRenderer
from servr.engines.base import CHATML_TEMPLATE, ChatTemplate, SamplingParams
from servr.generation import Delta, Finished, GenerationStream
from servr.metrics import ServerMetrics
from servr.scheduler import Scheduler
from servr_helpers import asgi, settings

pytestmark = pytest.mark.slow

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "days"], "additionalProperties": False}}}]
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 1}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
]
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'


def test_qwen_template_renders_tools_and_replays_history(qwen_engine) -> None:
    template = qwen_engine.chat_template()
    assert template.origin == "gguf"
    prompt = ChatRenderer(template).render(HISTORY, TOOLS)
    assert prompt.startswith("<|im_start|>system\nYou are Qwen")
    assert "<tools>\n" + json.dumps(TOOLS[0], ensure_ascii=False) + "\n</tools>" in prompt
    # string arguments in the history are written back as an object, the result as a tool response
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}\n</tool_call><|im_end|>' in prompt
    assert "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response><|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    # <tool_call> is one token of Qwen's vocabulary, as in the real model
    assert qwen_engine.tokenize("<tool_call>") == [151657]


def test_template_without_tools_gets_them_in_the_system_message() -> None:
    renderer = ChatRenderer(ChatTemplate(CHATML_TEMPLATE, "fallback"))
    assert not renderer.knows_tools
    prompt = renderer.render([{"role": "system", "content": "Be brief."}, *HISTORY], TOOLS)
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert json.dumps(TOOLS[0], ensure_ascii=False) in system and "<tool_call>" in system
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}'
            '\n</tool_call><|im_end|>') in prompt
    assert "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response><|im_end|>" in prompt


def _plan(engine, **body):
    from servr.schemas import ChatCompletionRequest

    req = ChatCompletionRequest(model="tiny-qwen", messages=HISTORY[:1], tools=TOOLS, **body)
    return chat.plan_chat(req, engine, ChatRenderer(engine.chat_template()))


def _events_from_tokens(engine, text: str) -> list:
    """What the worker would post for a model that wrote ``text``: one Delta per real Qwen token."""
    tokens = engine.tokenize(text)
    events = [Delta(engine.detokenize([t])) for t in tokens]
    return events + [Finished("stop", 10, 0, len(tokens))]


def _stream_of(engine, events) -> GenerationStream:
    scheduler = Scheduler(1)
    stream = GenerationStream(scheduler, engine, [1], SamplingParams(max_tokens=8), [],
                              ServerMetrics(lambda: 0, lambda: False))
    for event in events:
        stream._queue.put_nowait(event)
    return stream


def test_known_qwen_output_becomes_tool_calls(qwen_engine) -> None:
    plan = _plan(qwen_engine)

    async def go():
        return await chat.complete(_stream_of(qwen_engine, _events_from_tokens(qwen_engine, CALL_TEXT)), plan, "tiny-qwen")

    body = asyncio.run(go())
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'}


def test_known_qwen_output_streams_as_tool_call_deltas_without_markup(qwen_engine) -> None:
    plan = _plan(qwen_engine, stream=True)
    text = "Let me check. " + CALL_TEXT

    async def go():
        stream = _stream_of(qwen_engine, _events_from_tokens(qwen_engine, text))
        return [line async for line in chat.stream_chunks(stream, plan, "tiny-qwen")]

    lines = asyncio.run(go())
    assert lines[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(line[len(b"data: "):]) for line in lines[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == "Let me check. "
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "Paris", "days": 2}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_required_tool_call_from_random_weights_still_validates(qwen_engine) -> None:
    from servr.app import create_app

    app = create_app(settings(model="tiny-qwen"), qwen_engine)
    try:
        for seed in (1, 2, 3):
            r = asgi(app, "POST", "/v1/chat/completions", json={
                "model": "tiny-qwen", "messages": HISTORY[:1], "tools": TOOLS, "tool_choice": "required",
                "max_tokens": 120, "temperature": 1.0, "seed": seed})
            assert r.status_code == 200, r.text
            choice = r.json()["choices"][0]
            assert choice["finish_reason"] == "tool_calls"
            call = choice["message"]["tool_calls"][0]["function"]
            assert call["name"] == "get_weather"
            jsonschema.validate(json.loads(call["arguments"]), TOOLS[0]["function"]["parameters"])
    finally:
        app.state.server.scheduler.close()


def test_fim_uses_qwen_coder_tokens(qwen_engine) -> None:
    from servr.app import create_app
    from servr.completions import fim_prompt

    ids = fim_prompt(qwen_engine, "def add(a, b):\n    return ", "\n\nprint(add(1, 2))")
    assert ids[0] == 151659 and 151661 in ids and ids[-1] == 151660
    app = create_app(settings(model="tiny-qwen"), qwen_engine)
    try:
        r = asgi(app, "POST", "/v1/completions", json={"model": "tiny-qwen", "prompt": "def add(a, b):\n    return ",
                                                        "suffix": "\n\nprint(add(1, 2))", "max_tokens": 4, "seed": 1})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == len(ids)
        assert r.json()["usage"]["completion_tokens"] >= 1
    finally:
        app.state.server.scheduler.close()


def test_builder_writes_a_loadable_qwen2_file(tiny_qwen_path: Path, qwen_engine) -> None:
    assert tiny_qwen_path.name == "tiny-qwen2.5-instruct.gguf"
    described = qwen_engine.describe()
    assert described["n_vocab"] == 151936 and described["fim"] is True and described["n_ctx_train"] == 32768
