"""The official openai SDK against a live uvicorn serving the real SmolLM2 GGUF."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import jsonschema
import openai
import pytest

from servr_helpers import wait_until

pytestmark = pytest.mark.slow

SMOL = "smollm2-135m-instruct-q4_1"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                         "parameters": {"type": "object", "properties": {}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
# an answer that cannot end early: the grammar allows the end only after 2000 characters (~500 tokens)
LONG = {"model": SMOL, "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": 1500, "temperature": 0.8, "seed": 11,
        "response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": {
            "type": "object", "properties": {"story": {"type": "string", "minLength": 2000}}, "required": ["story"]}}}}


@pytest.fixture()
def client(smol_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=smol_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_served_id_alias_and_embedding_model(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == [SMOL, "smol", "all-minilm-l6-v2"]
    assert client.models.retrieve("smol").id == "smol"


def test_chat_answers_with_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "What is the capital of France?"}],
                                       max_tokens=24, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_is_deterministic_with_seed(client: openai.OpenAI) -> None:
    def ask() -> str:
        r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Tell me a word."}],
                                           max_tokens=8, temperature=1.0, seed=1234)
        return r.choices[0].message.content

    assert ask() == ask()


def test_stop_string_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Count from 1 to 10 with commas."}],
                                       max_tokens=40, temperature=0, stop=["5"])
    assert "5" not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_stream_has_one_id_usage_chunk_and_done(smol_url: str) -> None:
    body = {"model": SMOL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", smol_url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] >= 1
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text.strip()


def test_repeated_prompt_reports_cached_tokens(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "List three colours of the rainbow, please."}]
    first = client.chat.completions.create(model=SMOL, messages=messages, max_tokens=4, temperature=0)
    second = client.chat.completions.create(model=SMOL, messages=messages, max_tokens=4, temperature=0)
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    # everything but the last prompt token is reused (llama.cpp re-evaluates one to get fresh logits)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1


def test_required_tool_choice_gives_a_call_that_validates(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=SMOL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       max_tokens=80, temperature=0.7, seed=7)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name in ("get_weather", "get_time")
    schema = WEATHER["function"]["parameters"] if call.function.name == "get_weather" else TIME["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_named_tool_choice_calls_that_tool(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=SMOL, messages=ASK, tools=[WEATHER, TIME],
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                       max_tokens=80, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_streamed_required_tool_call_arrives_as_openai_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=SMOL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                            max_tokens=80, temperature=0, stream=True)
    deltas, contents, finish = [], [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        contents.append(delta.content or "")
        deltas.extend(delta.tool_calls or [])
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert "<tool_call>" not in "".join(contents) and "get_weather" not in "".join(contents)
    first = deltas[0]
    assert (first.index, first.type, first.function.name) == (0, "function", "get_weather")
    assert first.id.startswith("call_")
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in deltas[1:])
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])


def test_auto_tool_choice_stream_never_leaks_markup(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=SMOL, messages=ASK, tools=[WEATHER], max_tokens=60,
                                            temperature=0, stream=True)
    content = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert "<tool_call>" not in content


def test_json_schema_response_format_validates(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Invent a person."}],
                                       response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
                                       max_tokens=60, temperature=0)
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_json_object_response_format_is_an_object(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": 'Reply in JSON like {"colour": "red"}.'}],
                                       response_format={"type": "json_object"}, max_tokens=200, temperature=0)
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_logprobs_come_with_top_alternatives(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(item.top_logprobs) == 2 and item.logprob <= 0 for item in content)
    # greedy: the chosen token is the most likely one
    assert content[0].token == content[0].top_logprobs[0].token


def test_text_completion_and_stream(client: openai.OpenAI) -> None:
    r = client.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert r.choices[0].text and r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=SMOL, prompt="The capital of France is", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_suffix_on_a_model_without_fim_tokens_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=SMOL, prompt="def f(", suffix="\n    return x", max_tokens=5)
    assert err.value.body["param"] == "suffix"
    assert "fill-in-the-middle" in err.value.body["message"]


def test_embeddings_float_and_base64_agree(client: openai.OpenAI, smol_url: str) -> None:
    sdk = client.embeddings.create(model="all-minilm-l6-v2", input=["hello world", "a cat"])  # the SDK asks for base64
    assert [d.index for d in sdk.data] == [0, 1] and len(sdk.data[0].embedding) == 384
    raw = httpx.post(smol_url + "/v1/embeddings", json={"model": SMOL, "input": "hello world",
                                                        "encoding_format": "float"}, timeout=60).json()
    assert raw["model"] == "all-minilm-l6-v2" and raw["usage"]["prompt_tokens"] > 0
    assert raw["data"][0]["embedding"] == pytest.approx(sdk.data[0].embedding, abs=1e-5)


def test_tokenize_detokenize_round_trip(smol_url: str) -> None:
    text = "def add(a, b):\n    return a + b  # ünïcode"
    tokens = httpx.post(smol_url + "/tokenize", json={"content": text}).json()["tokens"]
    assert all(isinstance(t, int) for t in tokens) and len(tokens) > 5
    assert httpx.post(smol_url + "/detokenize", json={"tokens": tokens}).json() == {"content": text}


def test_bad_body_is_400_in_openai_shape(client: openai.OpenAI, smol_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=SMOL, messages=[], max_tokens=5)
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["param"] == "messages"
    r = httpx.post(smol_url + "/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_n_above_one_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=SMOL, messages=ASK, n=2, max_tokens=5)
    assert err.value.body["param"] == "n" and "n=1" in err.value.body["message"]


def test_unknown_model_is_404_listing_served_ids(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=5)
    body = err.value.body
    assert body["code"] == "model_not_found" and SMOL in body["message"] and "smol" in body["message"]


def test_context_overflow_is_400_with_both_numbers(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=SMOL, messages=ASK, max_tokens=5000)
    body = err.value.body
    assert body["code"] == "context_length_exceeded"
    assert "2048" in body["message"] and "5000" in body["message"]
    long_prompt = "word " * 3000
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": long_prompt}])
    assert err.value.body["code"] == "context_length_exceeded"


def _cancelled(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("servr_generations_cancelled_total"):
            return float(line.split()[-1])
    raise AssertionError("no cancelled counter in /metrics")


def test_disconnect_mid_stream_frees_the_model(client: openai.OpenAI, smol_url: str) -> None:
    before = _cancelled(smol_url)
    with httpx.stream("POST", smol_url + "/v1/chat/completions", json={**LONG, "stream": True}, timeout=120) as r:
        lines = r.iter_lines()  # held: a dropped iterator closes the connection
        data = [line for line, _ in zip((ln for ln in lines if ln.startswith("data: ")), range(5))]
        assert len(data) == 5
        # not a passing state: under LONG's grammar the answer cannot end before 600 characters
        health = httpx.get(smol_url + "/health", timeout=5).json()  # answers while generating
        assert health["queue"]["generating"] is True
    # deadlines, not samples: a loaded machine may take a while to notice the close and finish a token
    wait_until(lambda: _cancelled(smol_url) == before + 1, timeout=30)
    wait_until(lambda: httpx.get(smol_url + "/health").json()["queue"]["generating"] is False, timeout=30)
    assert _cancelled(smol_url) == before + 1
    r2 = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5)
    assert r2.choices[0].message.content


def test_non_streaming_client_that_leaves_stops_its_generation(client: openai.OpenAI, smol_url: str) -> None:
    before = _cancelled(smol_url)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(smol_url + "/v1/chat/completions", json=LONG, timeout=httpx.Timeout(30, read=1.0))
    # LONG cannot end within the client's 1 s, so the generation ends only by the cancel, counted once
    wait_until(lambda: _cancelled(smol_url) == before + 1, timeout=30)
    wait_until(lambda: httpx.get(smol_url + "/health").json()["queue"]["generating"] is False, timeout=30)
    assert _cancelled(smol_url) == before + 1
    r2 = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5)
    assert r2.choices[0].message.content


def test_eight_concurrent_streams_all_complete(smol_url: str) -> None:
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            c = openai.OpenAI(base_url=smol_url + "/v1", api_key="unused", max_retries=0, timeout=300)
            stream = c.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": f"Say the number {i}."}],
                                               max_tokens=12, temperature=0, stream=True)
            finish = None
            parts = []
            for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
            assert finish in ("stop", "length")
            results[i] = "".join(parts)
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    assert sorted(results) == list(range(8)) and all(results.values())


def _send_and_leave(url: str, body: dict) -> None:
    """POST ``body`` on a raw socket and close it at once: the client is gone before any response starts."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + payload)
        sock.shutdown(socket.SHUT_RDWR)


def test_stream_whose_client_leaves_before_it_starts_is_cancelled(client: openai.OpenAI, smol_url: str) -> None:
    before = _cancelled(smol_url)
    with httpx.stream("POST", smol_url + "/v1/chat/completions", json={**LONG, "stream": True}, timeout=120) as r:
        lines = r.iter_lines()  # held: a dropped iterator closes the connection
        assert next(line for line in lines if line.startswith("data: "))
        # queued behind the running generation, and gone before its response could start
        _send_and_leave(smol_url, {**LONG, "stream": True})
        wait_until(lambda: _cancelled(smol_url) == before + 1, timeout=15)
    wait_until(lambda: _cancelled(smol_url) == before + 2, timeout=15)
    # nothing runs for nobody: the model is free as soon as the held stream is closed
    wait_until(lambda: httpx.get(smol_url + "/health").json()["queue"] == {"waiting": 0, "capacity": 16,
                                                                          "generating": False}, timeout=15)
    r2 = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5)
    assert r2.choices[0].message.content


def test_non_streaming_client_that_leaves_while_queued_is_counted_and_answered(smol_url: str) -> None:
    before = _cancelled(smol_url)
    with httpx.stream("POST", smol_url + "/v1/chat/completions", json={**LONG, "stream": True}, timeout=120) as r:
        lines = r.iter_lines()  # held: a dropped iterator closes the connection
        assert next(line for line in lines if line.startswith("data: "))
        with pytest.raises(httpx.ReadTimeout):  # leaves while its job still waits behind the stream
            httpx.post(smol_url + "/v1/chat/completions", json=LONG, timeout=httpx.Timeout(30, read=1.0))
        assert httpx.get(smol_url + "/health").json()["queue"]["generating"] is True  # the stream cannot end yet
    # the skipped job still ends its request (no handler left waiting forever) and is counted
    wait_until(lambda: _cancelled(smol_url) == before + 2, timeout=30)
    wait_until(lambda: httpx.get(smol_url + "/health").json()["queue"] == {"waiting": 0, "capacity": 16,
                                                                          "generating": False}, timeout=30)
