"""The Gemini gateway against a stand-in that speaks the generateContent wire format on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import pytest

from core.errors import ConfigError, ContextOverflow, GatewayError, Interrupted, ModelNotFound, ModelUnavailable
from core.messages import Message, ToolCall
from core.tools import Tool, object_schema
from gate.gemini import GeminiGateway
from gate.gemini_wire import SKIP_SIGNATURE, gemini_schema
from gate.scripted_gemini import ScriptedGemini
from gate.transport import RetryPolicy

ASK = [Message.system("You read files."), Message.user("what is in a.py?")]
READ = {"name": "read_file", "args": {"path": "a.py"}}


def gateway_for(stand_in: ScriptedGemini, model: str = "gemini-2.5-flash", key: str = "test-key",
                retry: RetryPolicy | None = None) -> GeminiGateway:
    return GeminiGateway(key, model, stand_in.base_url, retry=retry or RetryPolicy(max_retries=0))


@pytest.mark.parametrize("stream", [False, True])
def test_function_call_and_function_response_round_trip(tools, stream):
    replies = [{"function_calls": [READ], "thought_signature": "c2lnbmF0dXJl"}, {"text": "a.py prints hi."}]
    events = []
    on_event = events.append if stream else None
    with ScriptedGemini(replies) as gemini:
        gateway = gateway_for(gemini)
        first = gateway.complete(ASK, tools, on_event=on_event)
        call = first.tool_calls[0]
        assert (first.finish_reason, call.name, dict(call.arguments), call.error) == (
            "tool_calls", "read_file", {"path": "a.py"}, None)
        history = ASK + [first.message, Message.tool(call.id, "read_file", "print('hi')")]
        second = gateway.complete(history, tools, on_event=on_event)
    assert (second.text, second.finish_reason) == ("a.py prints hi.", "stop")
    sent = gemini.requests[1]["body"]
    assert sent["systemInstruction"] == {"parts": [{"text": "You read files."}]}
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "what is in a.py?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {"path": "a.py"}},
                                     "thoughtSignature": "c2lnbmF0dXJl"}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "read_file", "response": {"result": "print('hi')"}}}]},
    ]
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "write_file"
    expected_path = "streamGenerateContent" if stream else "generateContent"
    assert all(r["path"].endswith(f":{expected_path}") for r in gemini.requests)
    if stream:
        assert all(r["query"] == "alt=sse" for r in gemini.requests)
        assert ("tool_call", "read_file") in [(e.kind, e.name) for e in events]


def test_answers_to_parallel_calls_travel_in_one_content(tools):
    calls = (ToolCall("read_file", {"path": "a"}, id="call_a"), ToolCall("read_file", {"path": "b"}, id="call_b"))
    history = ASK + [Message.assistant("", calls), Message.tool("call_a", "read_file", "A"),
                     Message.tool("call_b", "read_file", "B")]
    with ScriptedGemini([{"text": "both read"}]) as gemini:
        gateway_for(gemini).complete(history, tools)
    contents = gemini.requests[0]["body"]["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert [p["functionResponse"]["response"]["result"] for p in contents[2]["parts"]] == ["A", "B"]


def test_call_ids_gemini_gives_are_kept_and_sent_back(tools):
    replies = [{"function_calls": [{**READ, "id": "gem-1"}]}, {"text": "ok"}]
    with ScriptedGemini(replies) as gemini:
        gateway = gateway_for(gemini)
        first = gateway.complete(ASK, tools)
        assert first.tool_calls[0].id == "gem-1"
        gateway.complete(ASK + [first.message, Message.tool("gem-1", "read_file", "x")], tools)
    model_part, answer_part = (c["parts"][0] for c in gemini.requests[1]["body"]["contents"][1:])
    assert model_part["functionCall"]["id"] == "gem-1" and answer_part["functionResponse"]["id"] == "gem-1"


def test_calls_gemini_3_did_not_make_carry_the_skip_signature(tools):
    local = Message.assistant("", [ToolCall("read_file", {"path": "a"}, id="call_local")])
    with ScriptedGemini([{"text": "ok"}, {"text": "ok"}]) as gemini:
        gateway_for(gemini, model="gemini-3-flash-preview").complete(ASK + [local, Message.tool("call_local", "read_file", "x")], tools)
        gateway_for(gemini).complete(ASK + [local, Message.tool("call_local", "read_file", "x")], tools)
    gemini3, gemini25 = (r["body"]["contents"][1]["parts"][0] for r in gemini.requests)
    assert gemini3["thoughtSignature"] == SKIP_SIGNATURE
    assert "thoughtSignature" not in gemini25


def test_only_the_call_gemini_3_signed_carries_a_signature_in_a_parallel_batch(tools):
    two = [READ, {"name": "read_file", "args": {"path": "b.py"}}]
    with ScriptedGemini([{"function_calls": two, "thought_signature": "c2ln"}, {"text": "ok"}]) as gemini:
        gateway = gateway_for(gemini, model="gemini-3-pro-preview")
        first = gateway.complete(ASK, tools)
        results = [Message.tool(c.id, "read_file", "x") for c in first.tool_calls]
        gateway.complete(ASK + [first.message, *results], tools)
    parts = gemini.requests[1]["body"]["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in parts] == ["c2ln", None]


def test_streamed_text_arrives_in_pieces_with_usage():
    events = []
    with ScriptedGemini([{"text": "Twelve words of streamed answer, more or less, arrive here."}], chunk_chars=6) as gemini:
        completion = gateway_for(gemini).complete(ASK, on_event=events.append)
    assert len(events) > 5
    assert "".join(e.text for e in events) == completion.text
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.model == "scripted-gemini"


def test_the_key_goes_in_the_header_and_a_bad_one_is_one_clear_line():
    with ScriptedGemini([{"text": "never"}], api_key="right") as gemini:
        with pytest.raises(ConfigError) as caught:
            gateway_for(gemini, key="wrong-secret").complete(ASK)
        assert gateway_for(gemini, key="right").complete(ASK).text == "never"
    assert str(caught.value) == ("Gemini rejected the API key (API_KEY_INVALID) (check GEMINI_API_KEY; keys are "
                                 "made at https://aistudio.google.com/apikey)")
    assert "wrong-secret" not in str(caught.value)
    assert all("key=" not in r["query"] for r in gemini.requests)


def test_quota_429_is_retried_after_the_delay_gemini_asks_for(fast_retry):
    quota = {"status": 429, "status_name": "RESOURCE_EXHAUSTED", "message": "Quota exceeded.", "retry_delay": "0.3s"}
    with ScriptedGemini([quota, {"text": "after waiting"}]) as gemini:
        started = time.monotonic()
        completion = gateway_for(gemini, retry=fast_retry).complete(ASK)
    assert completion.text == "after waiting"
    assert time.monotonic() - started >= 0.3


def test_quota_exhausted_after_retries_is_one_clear_line(fast_retry):
    quota = {"status": 429, "status_name": "RESOURCE_EXHAUSTED", "message": "Quota exceeded for metric x.",
             "retry_delay": "0s"}
    with ScriptedGemini([quota] * 3) as gemini:
        with pytest.raises(GatewayError) as caught:
            gateway_for(gemini, retry=fast_retry).complete(ASK)
    assert str(caught.value) == ("Gemini quota exhausted (429 RESOURCE_EXHAUSTED): Quota exceeded for metric x. "
                                 "(wait and try again, or check your key's quota)")
    assert caught.value.retryable and len(gemini.requests) == 3


@pytest.mark.parametrize("status,name", [(500, "INTERNAL"), (503, "UNAVAILABLE")])
def test_server_errors_are_retried(fast_retry, status, name):
    with ScriptedGemini([{"status": status, "status_name": name, "message": "try later"}, {"text": "ok"}]) as gemini:
        assert gateway_for(gemini, retry=fast_retry).complete(ASK).text == "ok"


def test_a_server_error_that_persists_says_so(fast_retry):
    with ScriptedGemini([{"status": 503, "status_name": "UNAVAILABLE", "message": "overloaded"}] * 3) as gemini:
        with pytest.raises(GatewayError, match=r"^Gemini failed \(503 UNAVAILABLE\): overloaded$"):
            gateway_for(gemini, retry=fast_retry).complete(ASK)


@pytest.mark.parametrize("stream", [False, True])
def test_a_blocked_prompt_is_one_clear_line(stream):
    with ScriptedGemini([{"block_reason": "SAFETY"}]) as gemini:
        with pytest.raises(GatewayError, match=r"^Gemini blocked the prompt \(SAFETY\) \(rephrase"):
            gateway_for(gemini).complete(ASK, on_event=(lambda e: None) if stream else None)


def test_an_answer_stopped_for_safety_is_one_clear_line():
    with ScriptedGemini([{"text": "partial", "finish_reason": "SAFETY"}]) as gemini:
        with pytest.raises(GatewayError, match=r"^Gemini stopped the answer \(finishReason SAFETY\)"):
            gateway_for(gemini).complete(ASK)


def test_a_malformed_function_call_goes_back_to_the_model_as_a_call_error(tools):
    with ScriptedGemini([{"finish_reason": "MALFORMED_FUNCTION_CALL"}]) as gemini:
        completion = gateway_for(gemini).complete(ASK, tools)
    (call,) = completion.tool_calls
    assert call.error.startswith("your function call could not be read (MALFORMED_FUNCTION_CALL)")


def test_max_tokens_maps_to_length():
    with ScriptedGemini([{"text": "cut", "finish_reason": "MAX_TOKENS"}]) as gemini:
        completion = gateway_for(gemini).complete(ASK, max_tokens=3)
    assert completion.finish_reason == "length"
    assert gemini.requests[0]["body"]["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 3}


def test_an_unknown_function_name_is_a_call_error(tools):
    with ScriptedGemini([{"function_calls": [{"name": "rm_rf", "args": {}}]}]) as gemini:
        (call,) = gateway_for(gemini).complete(ASK, tools).tool_calls
    assert call.error == "unknown tool 'rm_rf'; the tools offered are: read_file, write_file"


def test_an_unknown_model_is_model_not_found():
    with ScriptedGemini([{"status": 404, "status_name": "NOT_FOUND", "message": "models/gemini-0 is not found"}]) as gemini:
        with pytest.raises(ModelNotFound, match=r"Gemini has no model 'gemini-0' \(404 NOT_FOUND\) \(set GEMINI_MODEL"):
            gateway_for(gemini, model="gemini-0").complete(ASK)


def test_too_many_input_tokens_is_context_overflow():
    too_long = {"status": 400, "status_name": "INVALID_ARGUMENT",
                "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}
    with ScriptedGemini([too_long]) as gemini:
        with pytest.raises(ContextOverflow):
            gateway_for(gemini).complete(ASK)


def test_an_unreachable_gemini_is_model_unavailable(free_port, fast_retry):
    gateway = GeminiGateway("k", "gemini-2.5-flash", f"http://127.0.0.1:{free_port}/v1beta", retry=fast_retry)
    with pytest.raises(ModelUnavailable, match=f"cannot reach Gemini at http://127.0.0.1:{free_port}/v1beta"):
        gateway.complete(ASK)


def test_tokens_are_counted_by_count_tokens_and_remembered(tools):
    with ScriptedGemini([]) as gemini:
        gateway = gateway_for(gemini)
        first = gateway.count_tokens(ASK, tools)
        again = gateway.count_tokens(ASK, tools)
    assert first == again > 0
    assert len(gemini.count_requests) == 1
    request = gemini.count_requests[0]["generateContentRequest"]
    assert request["model"] == "models/gemini-2.5-flash" and request["contents"][0]["parts"] == [{"text": "what is in a.py?"}]


def test_tokens_are_estimated_when_gemini_cannot_be_reached(free_port):
    gateway = GeminiGateway("k", "m", f"http://127.0.0.1:{free_port}/v1beta")
    assert gateway.count_tokens(ASK) > 0


def test_context_length_is_the_models_input_token_limit():
    with ScriptedGemini([], input_token_limit=1_000_000) as gemini:
        assert gateway_for(gemini).context_length() == 1_000_000


def test_cancel_mid_stream_raises_interrupted():
    cancel = threading.Event()
    with ScriptedGemini([{"text": "a long answer in many small pieces " * 20}], chunk_chars=3) as gemini:
        with pytest.raises(Interrupted):
            gateway_for(gemini).complete(ASK, on_event=lambda e: cancel.set(), cancel=cancel)


def test_schemas_are_cut_to_what_gemini_accepts():
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
              "properties": {"path": {"type": ["string", "null"], "description": "file"},
                             "mode": {"const": "w"},
                             "lines": {"type": "array", "items": {"type": "integer", "minimum": 1, "$comment": "x"}},
                             "level": {"type": "integer", "enum": [1, 2]},
                             "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
              "required": ["path"]}
    assert gemini_schema(schema) == {
        "type": "object",
        "properties": {"path": {"type": "string", "nullable": True, "description": "file"},
                       "mode": {"enum": ["w"]},
                       "lines": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                       "level": {"type": "integer", "description": "(one of: 1, 2)"},
                       "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "required": ["path"]}


def test_a_tool_without_parameters_is_declared_without_a_schema():
    bare = Tool("now", "the time", object_schema({}), lambda: "12:00")
    with ScriptedGemini([{"text": "noon"}]) as gemini:
        gateway_for(gemini).complete(ASK, [bare])
    assert gemini.requests[0]["body"]["tools"] == [{"functionDeclarations": [{"name": "now", "description": "the time"}]}]
