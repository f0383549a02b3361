"""The OpenAI-compatible gateway against a real stand-in server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time

import pytest

from core.errors import ConfigError, ContextOverflow, GatewayError, Interrupted, ModelNotFound, ModelUnavailable
from core.gateway import StreamEvent
from core.messages import Message, ToolCall
from gate.openai_compat import OpenAICompatGateway
from gate.scripted_server import ScriptedServer
from gate.transport import RetryPolicy

ASK = [Message.system("You write files."), Message.user("create a.py")]
CALL = {"name": "write_file", "arguments": {"path": "a.py", "content": "print('hi')\n"}}


def gateway_for(server: ScriptedServer, retry: RetryPolicy | None = None, **kw) -> OpenAICompatGateway:
    return OpenAICompatGateway(server.base_url, "scripted-model", retry=retry or RetryPolicy(max_retries=0), **kw)


def collect() -> tuple[list[StreamEvent], callable]:
    events: list[StreamEvent] = []
    return events, events.append


# --- answers, streamed and not -------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_a_plain_answer_comes_back_with_usage(stream):
    with ScriptedServer([{"text": "Done: a.py holds the greeting."}]) as server:
        events, on_event = collect()
        completion = gateway_for(server).complete(ASK, on_event=on_event if stream else None)
    assert (completion.text, completion.finish_reason, completion.tool_calls) == ("Done: a.py holds the greeting.", "stop", ())
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    assert server.requests[0]["stream"] is stream
    if stream:
        assert len(events) > 3 and "".join(e.text for e in events) == "Done: a.py holds the greeting."
        assert server.requests[0]["stream_options"] == {"include_usage": True}


def test_the_request_carries_model_messages_tools_and_sampling(tools):
    history = ASK + [Message.assistant("", [ToolCall("write_file", {"path": "a.py"}, id="call_1")]),
                     Message.tool("call_1", "write_file", "wrote a.py")]
    with ScriptedServer([{"text": "ok"}]) as server:
        gateway_for(server, temperature=0.7).complete(history, tools, max_tokens=64)
    sent = server.requests[0]
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("scripted-model", 0.7, 64)
    assert sent["tools"] == [t.spec() for t in tools]
    assert sent["messages"][2] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "write_file", "arguments": '{"path": "a.py"}'}}]}
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "wrote a.py"}


def test_no_tools_key_is_sent_when_no_tools_are_offered():
    with ScriptedServer([{"text": "ok"}]) as server:
        gateway_for(server).complete(ASK)
    assert "tools" not in server.requests[0]


def test_the_model_is_taken_from_v1_models_when_not_given():
    with ScriptedServer([{"text": "ok"}], model="qwen2.5-coder-7b") as server:
        gateway = OpenAICompatGateway(server.base_url)
        assert gateway.model == "qwen2.5-coder-7b"
        gateway.complete(ASK)
    assert server.requests[0]["model"] == "qwen2.5-coder-7b"


# --- tool calls: native and as text ---------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_native_tool_calls_are_decoded_and_assembled_from_deltas(tools, stream):
    two = [CALL, {"name": "read_file", "arguments": {"path": "b.py"}}]
    with ScriptedServer([{"tool_calls": two}], chunk_chars=2) as server:
        events, on_event = collect()
        completion = gateway_for(server).complete(ASK, tools, on_event=on_event if stream else None)
    assert completion.finish_reason == "tool_calls"
    assert [(c.name, dict(c.arguments), c.error) for c in completion.tool_calls] == [
        ("write_file", CALL["arguments"], None), ("read_file", {"path": "b.py"}, None)]
    assert all(c.id.startswith("call_") for c in completion.tool_calls)
    if stream:
        assert [(e.kind, e.name) for e in events] == [("tool_call", "write_file"), ("tool_call", "read_file")]


@pytest.mark.parametrize("fmt", ["tool_call", "fence", "bare", "tag"])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_written_as_text_are_parsed_in_every_format(tools, fmt, stream):
    with ScriptedServer([{"tool_calls": [CALL], "format": fmt}]) as server:
        events, on_event = collect()
        completion = gateway_for(server).complete(ASK, tools, on_event=on_event if stream else None)
    assert [(c.name, dict(c.arguments)) for c in completion.tool_calls] == [("write_file", CALL["arguments"])]
    assert (completion.text, completion.finish_reason) == ("", "tool_calls")
    if stream:  # the markup never reaches the screen as text
        assert [(e.kind, e.text or e.name) for e in events] == [("tool_call", "write_file")]


def test_text_before_a_tool_call_block_is_streamed_and_kept_without_the_markup(tools):
    with ScriptedServer([{"text": "I will write it now. ", "tool_calls": [CALL], "format": "tool_call"}]) as server:
        events, on_event = collect()
        completion = gateway_for(server).complete(ASK, tools, on_event=on_event)
    shown = "".join(e.text for e in events if e.kind == "text")
    assert shown == "I will write it now. "
    assert "<tool" not in shown
    assert completion.text == "I will write it now."
    assert completion.tool_calls[0].name == "write_file"


def test_json_that_is_not_a_call_streams_as_text_at_the_end(tools):
    answer = '{"result": 42}'
    with ScriptedServer([{"text": answer}]) as server:
        events, on_event = collect()
        completion = gateway_for(server).complete(ASK, tools, on_event=on_event)
    assert "".join(e.text for e in events) == answer
    assert (completion.text, completion.tool_calls) == (answer, ())


def test_markup_is_plain_text_when_no_tools_were_offered():
    text = '<tool_call>{"name": "write_file", "arguments": {}}</tool_call>'
    with ScriptedServer([{"text": text}]) as server:
        completion = gateway_for(server).complete(ASK)
    assert (completion.text, completion.tool_calls) == (text, ())


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_names_and_bad_arguments_become_call_errors(tools, stream):
    calls = [{"name": "delete_everything", "arguments": {}}, {"name": "read_file", "arguments": "{not json"}]
    with ScriptedServer([{"tool_calls": calls}]) as server:
        completion = gateway_for(server).complete(ASK, tools, on_event=(lambda e: None) if stream else None)
    unknown, bad = completion.tool_calls
    assert unknown.error == "unknown tool 'delete_everything'; the tools offered are: read_file, write_file"
    assert bad.name == "read_file" and bad.error.startswith("arguments are not valid JSON")


def test_an_unknown_name_in_tool_call_markup_is_a_call_error(tools):
    with ScriptedServer([{"tool_calls": [{"name": "rm", "arguments": {}}], "format": "tool_call"}]) as server:
        completion = gateway_for(server).complete(ASK, tools)
    assert [(c.name, c.error) for c in completion.tool_calls] == [
        ("rm", "unknown tool 'rm'; the tools offered are: read_file, write_file")]


# --- retries -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_503_twice_then_200_succeeds_after_two_retries(fast_retry, stream):
    busy = {"status": 503, "message": "server busy"}
    with ScriptedServer([busy, busy, {"text": "finally"}]) as server:
        completion = gateway_for(server, fast_retry).complete(ASK, on_event=(lambda e: None) if stream else None)
    assert completion.text == "finally"
    assert len(server.requests) == 3


def test_429_retries_are_spent_then_a_retryable_error_says_what_the_server_said(fast_retry):
    slow_down = {"status": 429, "message": "rate limited"}
    with ScriptedServer([slow_down] * 3) as server:
        with pytest.raises(GatewayError) as caught:
            gateway_for(server, fast_retry).complete(ASK)
    assert (caught.value.status_code, caught.value.retryable) == (429, True)
    assert str(caught.value) == "the model server answered 429: rate limited"
    assert len(server.requests) == 3


def test_retry_after_is_honoured():
    busy = {"status": 503, "message": "loading", "headers": {"Retry-After": "1"}}
    with ScriptedServer([busy, {"text": "ok"}]) as server:
        started = time.monotonic()
        gateway_for(server, RetryPolicy(max_retries=1, base_s=0.001, cap_s=0.001)).complete(ASK)
        waited = time.monotonic() - started
    assert 1.0 <= waited < 5


def test_a_read_timeout_is_retried(fast_retry):
    stall = {"text": "", "stall_after": 0}
    with ScriptedServer([stall, {"text": "second try"}]) as server:
        completion = gateway_for(server, fast_retry, timeout_s=1.0).complete(ASK, on_event=lambda e: None)
    assert completion.text == "second try"


def test_a_failure_after_text_was_shown_is_not_retried(fast_retry):
    # the stream stalls after showing text; a retry would show the answer twice
    with ScriptedServer([{"text": "half an answer", "stall_after": 4}, {"text": "never"}]) as server:
        with pytest.raises(GatewayError, match="timed out"):
            gateway_for(server, fast_retry, timeout_s=1.0).complete(ASK, on_event=lambda e: None)
    assert len(server.requests) == 1


def test_a_client_error_is_not_retried(fast_retry):
    with ScriptedServer([{"status": 400, "message": "'messages' is required"}, {"text": "never"}]) as server:
        with pytest.raises(GatewayError) as caught:
            gateway_for(server, fast_retry).complete(ASK)
    assert (caught.value.status_code, caught.value.retryable) == (400, False)
    assert len(server.requests) == 1


# --- errors that need a person -------------------------------------------------------------------

def test_connection_refused_is_model_unavailable_naming_the_url_and_the_start_command(free_port, fast_retry):
    url = f"http://127.0.0.1:{free_port}/v1"
    gateway = OpenAICompatGateway(url, "m", retry=fast_retry)
    with pytest.raises(ModelUnavailable) as caught:
        gateway.complete(ASK)
    assert str(caught.value) == (f"no model server answers at {url} (start one with `bash runsv.sh`, or give "
                                 "--model-url (AGENT_MODEL_URL) for another OpenAI-compatible engine)")
    assert "\n" not in str(caught.value)


def test_connection_refused_while_resolving_the_model_is_model_unavailable(free_port):
    with pytest.raises(ModelUnavailable, match="no model server answers"):
        OpenAICompatGateway(f"http://127.0.0.1:{free_port}/v1").model


def test_a_wrong_api_key_is_a_config_error():
    with ScriptedServer([{"text": "never"}], api_key="right") as server:
        with pytest.raises(ConfigError, match=r"refused the request \(401\): invalid API key \(set AGENT_API_KEY"):
            gateway_for(server, api_key="wrong").complete(ASK)


def test_the_right_api_key_is_sent_as_a_bearer_token():
    with ScriptedServer([{"text": "fine"}], api_key="right") as server:
        assert gateway_for(server, api_key="right").complete(ASK).text == "fine"


def test_an_unknown_model_is_model_not_found():
    missing = {"status": 404, "body": {"object": "error", "message": "The model `qwen-9000` does not exist.",
                                       "type": "NotFoundError", "param": None, "code": 404}}
    with ScriptedServer([missing]) as server:
        with pytest.raises(ModelNotFound, match="does not serve model 'scripted-model'"):
            gateway_for(server).complete(ASK)


@pytest.mark.parametrize("status,body", [
    (400, {"error": {"message": "This model's maximum context length is 4096 tokens.", "type": "invalid_request_error",
                     "param": "messages", "code": "context_length_exceeded"}}),  # OpenAI and this project's server
    (400, {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                     "type": "exceed_context_size_error", "n_prompt_tokens": 5000, "n_ctx": 4096}}),  # llama-server
    (400, {"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you requested "
           "3000 tokens (2500 in the messages, 500 in the completion).", "type": "BadRequestError", "code": 400}),  # vLLM
    (400, {"error": "input length exceeds maximum context length"}),  # Ollama
], ids=["openai", "llama-server", "vllm", "ollama"])
def test_context_overflow_is_recognised_in_each_engines_words(status, body, fast_retry):
    with ScriptedServer([{"status": status, "body": body}]) as server:
        with pytest.raises(ContextOverflow) as caught:
            gateway_for(server, fast_retry).complete(ASK)
    assert caught.value.status_code == 400 and not caught.value.retryable
    assert str(caught.value).startswith("the prompt does not fit the model's context: ")
    assert len(server.requests) == 1


def test_an_exhausted_script_is_a_server_error_not_a_silent_answer():
    with ScriptedServer([]) as server:
        with pytest.raises(GatewayError, match=r"no reply left for request #1 \(the script has 0\)"):
            gateway_for(server).complete(ASK)
    assert server.unexpected == 1


# --- cancellation --------------------------------------------------------------------------------

def test_cancel_mid_stream_raises_interrupted_promptly_and_drops_the_connection():
    cancel = threading.Event()
    texts: list[str] = []

    def on_event(event: StreamEvent) -> None:
        texts.append(event.text)
        cancel.set()  # the person presses Ctrl-C as the first words appear

    with ScriptedServer([{"text": "This answer stalls after a few words", "stall_after": 12}]) as server:
        started = time.monotonic()
        with pytest.raises(Interrupted):
            gateway_for(server).complete(ASK, on_event=on_event, cancel=cancel)
        took = time.monotonic() - started
        assert server.client_left.wait(5), "the server never saw the client leave"
    assert took < 2
    assert "".join(texts).startswith("Thi")


def test_cancel_while_the_server_is_silent_is_noticed_without_any_chunk():
    cancel = threading.Event()
    with ScriptedServer([{"text": "x", "stall_after": 0}]) as server:
        gateway = gateway_for(server)
        gateway.sends_progress()  # the server probes run before the timer: only the call is timed
        threading.Timer(0.3, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(Interrupted):
            gateway.complete(ASK, on_event=lambda e: None, cancel=cancel)
        assert time.monotonic() - started < 2
        assert server.client_left.wait(5)


def test_cancel_set_before_the_call_sends_nothing():
    cancel = threading.Event()
    cancel.set()
    with ScriptedServer([]) as server:
        with pytest.raises(Interrupted):
            gateway_for(server).complete(ASK, cancel=cancel)
    assert server.requests == []


def test_cancel_during_a_retry_wait_stops_waiting():
    cancel = threading.Event()
    busy = {"status": 503, "message": "busy", "headers": {"Retry-After": "30"}}
    with ScriptedServer([busy]) as server:
        gateway = gateway_for(server, RetryPolicy(max_retries=1))
        gateway.sends_progress()  # the server probes run before the timer: only the call is timed
        threading.Timer(0.3, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(Interrupted, match="waiting to retry"):
            gateway.complete(ASK, cancel=cancel)
        assert time.monotonic() - started < 2


def test_the_official_openai_sdk_reads_the_stand_in_servers_stream():
    openai = pytest.importorskip("openai")
    with ScriptedServer([{"tool_calls": [CALL]}]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                     stream=True))
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                   for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(args) == CALL["arguments"]
