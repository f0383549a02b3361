"""Our dataclasses to and from the OpenAI chat JSON, and replies assembled from stream chunks."""

from __future__ import annotations

import pytest

from core.errors import GatewayError
from core.messages import Message, ToolCall
from gate.openai_wire import (INVALID_CALL_NAME, StreamAssembler, completion_from_openai, message_from_openai,
                              message_to_openai)

ALLOWED = frozenset({"read_file", "write_file"})


def test_each_role_converts_to_openai_json():
    call = ToolCall("read_file", {"path": "ü.py"}, id="call_9")
    assert message_to_openai(Message.system("s")) == {"role": "system", "content": "s"}
    assert message_to_openai(Message.user("u")) == {"role": "user", "content": "u"}
    assert message_to_openai(Message.assistant("a", [call])) == {
        "role": "assistant", "content": "a",
        "tool_calls": [{"id": "call_9", "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "ü.py"}'}}]}
    assert message_to_openai(Message.tool("call_9", "read_file", "r")) == {
        "role": "tool", "tool_call_id": "call_9", "content": "r"}


def test_a_recorded_call_without_a_name_still_pairs_with_its_result():
    wire = message_to_openai(Message.assistant("", [ToolCall("", {}, id="call_x", error="no name")]))
    assert wire["tool_calls"][0]["function"] == {"name": INVALID_CALL_NAME, "arguments": "{}"}


def test_openai_json_round_trips_to_the_same_messages():
    messages = [Message.system("s"), Message.user("u"),
                Message.assistant("", [ToolCall("write_file", {"path": "a", "content": "b"}, id="call_1")]),
                Message.tool("call_1", "write_file", "ok")]
    back = [message_from_openai(message_to_openai(m), ALLOWED) for m in messages]
    assert [(m.role, m.content, m.tool_calls, m.tool_call_id) for m in back] == [
        (m.role, m.content, m.tool_calls, m.tool_call_id) for m in messages]


def test_content_parts_and_null_content_read_as_text():
    assert message_from_openai({"role": "assistant", "content": None}).content == ""
    parts = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    assert message_from_openai(parts).content == "ab"


def test_double_encoded_arguments_are_decoded_to_an_object():
    call = message_from_openai({"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "read_file", "arguments": '"{\\"path\\": \\"a\\"}"'}}]}, ALLOWED).tool_calls[0]
    assert (dict(call.arguments), call.error) == ({"path": "a"}, None)


def test_a_reply_without_choices_is_a_gateway_error():
    with pytest.raises(GatewayError, match="has no choices"):
        completion_from_openai({"object": "chat.completion"}, ALLOWED, "m")


def test_finish_reasons_are_mapped():
    def reason(raw, calls=None):
        msg = {"role": "assistant", "content": "x", **({"tool_calls": calls} if calls else {})}
        return completion_from_openai({"choices": [{"message": msg, "finish_reason": raw}]}, ALLOWED, "m").finish_reason
    assert [reason("stop"), reason("length"), reason(None), reason("weird"), reason("content_filter")] == [
        "stop", "length", "stop", "stop", "content_filter"]
    # a server that parsed calls itself may still say "stop"
    assert reason("stop", [{"id": "c", "function": {"name": "read_file", "arguments": "{}"}}]) == "tool_calls"


def chunk(delta=None, finish=None, **extra):
    return {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}


def test_native_call_deltas_are_joined_by_index_even_interleaved():
    asm = StreamAssembler(ALLOWED, "m")
    events = []
    for c in [chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "read_file", "arguments": ""}}]}),
              chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "write_file", "arguments": '{"pa'}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": '}}]}),
              chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'th": "b", "content": ""}'}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a"}'}}]}),
              chunk(finish="tool_calls"),
              {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                                        "prompt_tokens_details": {"cached_tokens": 8}}}]:
        events += asm.feed(c)
    completion, rest = asm.close()
    assert events == [("tool_call", "read_file"), ("tool_call", "write_file")] and rest == []
    assert [(c.id, c.name, dict(c.arguments)) for c in completion.tool_calls] == [
        ("call_a", "read_file", {"path": "a"}), ("call_b", "write_file", {"path": "b", "content": ""})]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.cached_tokens) == (10, 5, 8)


def test_whole_calls_without_index_each_start_a_new_call():
    # Ollama sends each call whole, and older versions without "index"
    asm = StreamAssembler(ALLOWED, "m")
    asm.feed(chunk({"tool_calls": [{"id": "c1", "function": {"name": "read_file", "arguments": {"path": "a"}}}]}))
    asm.feed(chunk({"tool_calls": [{"id": "c2", "function": {"name": "read_file", "arguments": {"path": "b"}}}]}))
    completion, _ = asm.close()
    assert [dict(c.arguments)["path"] for c in completion.tool_calls] == ["a", "b"]


def test_a_tool_call_block_split_across_chunks_never_shows_markup():
    asm = StreamAssembler(ALLOWED, "m")
    text = 'Sure. <tool_call>\n{"name": "read_file", "arguments": {"path": "a"}}\n</tool_call>'
    shown = []
    for i in range(0, len(text), 2):
        shown += [v for k, v in asm.feed(chunk({"content": text[i:i + 2]})) if k == "text"]
    completion, rest = asm.close()
    shown += [v for k, v in rest if k == "text"]
    assert "".join(shown) == "Sure. "
    assert (completion.text, completion.tool_calls[0].name) == ("Sure.", "read_file")


def test_a_fenced_call_after_prose_is_found_and_taken_out_of_the_content():
    asm = StreamAssembler(ALLOWED, "m")
    text = 'I will read it.\n```json\n{"name": "read_file", "arguments": {"path": "a"}}\n```'
    asm.feed(chunk({"content": text}))
    completion, rest = asm.close()
    assert completion.text == "I will read it."
    assert [c.name for c in completion.tool_calls] == ["read_file"]
    assert ("tool_call", "read_file") in rest
