"""One server, two backends: the same requests against llama.cpp and Transformers serving the tiny random Qwen2.

Both engines load the same weights (the GGUF, and its Hugging Face conversion), so the wire
behaviour — usage, streaming, tool calls, schemas, stop, limits, seeds, disconnects, errors,
cached prompt tokens — must be the same whichever backend runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import jsonschema
import openai
import pytest

from servr_helpers import live_server, settings, wait_until
from tiny_qwen_hf import hf_folder_from_gguf

pytestmark = pytest.mark.slow

MODEL = "tiny-qwen"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                         "parameters": {"type": "object", "properties": {}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
REPORT = {"type": "object", "properties": {"ok": {"type": "boolean"}, "mood": {"enum": ["good", "bad"]}},
          "required": ["ok", "mood"], "additionalProperties": False}


CTX = 32768  # the trained context: a generation can run long enough for a client to leave in the middle


@pytest.fixture(scope="module")
def hf_engine(tiny_qwen_path: Path):
    from servr.engines.transformers import TransformersEngine

    engine = TransformersEngine(hf_folder_from_gguf(tiny_qwen_path), model_id=MODEL, n_ctx=CTX, n_threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def llama_engine(tiny_qwen_path: Path):
    from servr.engines import load_engine

    engine = load_engine(settings(ctx=CTX, model=MODEL, threads=1), tiny_qwen_path)
    yield engine
    engine.close()


@pytest.fixture(scope="module", params=["llamacpp", "transformers"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    from servr.app import create_app

    engine = request.getfixturevalue("llama_engine" if request.param == "llamacpp" else "hf_engine")
    assert engine.backend == request.param and engine.model_id == MODEL
    with live_server(create_app(settings(model=MODEL, queue_size=8), engine)) as base:
        yield base


@pytest.fixture()
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


def test_chat_answers_with_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, temperature=0)
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=3, temperature=1.0, seed=7)
    assert (r.choices[0].finish_reason, r.usage.completion_tokens) == ("length", 3)


def test_seed_repeats_the_answer(client: openai.OpenAI) -> None:
    def ask(seed: int) -> str:
        return client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8, temperature=1.0,
                                              seed=seed).choices[0].message.content

    assert ask(1234) == ask(1234)
    assert ask(1234) != ask(4321)


def test_stop_string_cuts_the_answer_before_it(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, temperature=0).choices[0].message.content
    stop = full[4:7]
    assert len(stop) == 3
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].message.content == full[:full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_stream_has_one_id_usage_and_done(url: str) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    plain = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False}, timeout=120).json()
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert streamed == plain["choices"][0]["message"]["content"]


@pytest.mark.parametrize("seed", [1, 2])
def test_required_tool_choice_gives_a_call_that_validates(client: openai.OpenAI, seed: int) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       max_tokens=120, temperature=1.0, seed=seed)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0].function
    schema = {"get_weather": WEATHER, "get_time": TIME}[call.name]["function"]["parameters"]
    jsonschema.validate(json.loads(call.arguments), schema)


def test_named_tool_choice_calls_that_tool(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], max_tokens=120, seed=5,
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = r.choices[0].message.tool_calls[0].function
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["function"]["parameters"])


def test_json_schema_response_format_validates(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=60, seed=3, response_format={
        "type": "json_schema", "json_schema": {"name": "report", "schema": REPORT}})
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), REPORT)


def test_growing_conversation_reports_cached_tokens_in_usage_and_metrics(client: openai.OpenAI, url: str) -> None:
    history = [{"role": "system", "content": "You fix bugs in a Python project."},
               {"role": "user", "content": "Open app.py."}]
    first = client.chat.completions.create(model=MODEL, messages=history, max_tokens=8, temperature=0)
    before = _metric(url, "servr_prompt_tokens_cached_total")
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "Now run the tests."}]
    second = client.chat.completions.create(model=MODEL, messages=history, max_tokens=8, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= cached < second.usage.prompt_tokens
    assert _metric(url, "servr_prompt_tokens_cached_total") == before + cached


def test_context_overflow_is_400_with_both_numbers(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * (CTX + 100)}],
                                       max_tokens=4)
    assert f"{CTX}" in str(info.value).replace(",", "")


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match=MODEL):
        client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=2)


def test_disconnect_mid_stream_frees_the_model(client: openai.OpenAI, url: str) -> None:
    before = _metric(url, "servr_generations_cancelled_total")
    body = {"model": MODEL, "messages": ASK, "max_tokens": CTX - 100, "temperature": 1.0, "seed": 11, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = r.iter_lines()
        for _ in range(3):
            assert next(line for line in lines if line).startswith("data: ")
        # asked while the stream is still being read: leaving the loop may already close the connection
        assert httpx.get(url + "/health", timeout=5).json()["queue"]["generating"] is True
    wait_until(lambda: httpx.get(url + "/health").json()["queue"]["generating"] is False, timeout=10)
    assert _metric(url, "servr_generations_cancelled_total") == before + 1
    after = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, temperature=0)
    assert after.usage.completion_tokens == 2
