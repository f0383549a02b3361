"""The strict scripted gateway: plays its script, records requests, fails loudly on surprises."""

from __future__ import annotations

import threading

import pytest

from core.errors import ContextOverflow, Interrupted
from core.gateway import StreamEvent
from core.messages import Completion, Message, ToolCall, Usage
from gate.scripted import ScriptedGateway

ASK = [Message.system("be brief"), Message.user("hello")]


def test_a_string_step_is_a_text_answer():
    gateway = ScriptedGateway(["Hi there."])
    completion = gateway.complete(ASK)
    assert (completion.text, completion.tool_calls, completion.finish_reason) == ("Hi there.", (), "stop")
    assert completion.model == "scripted"


def test_tool_call_steps_alone_or_with_text_become_tool_call_answers():
    call = ToolCall("read_file", {"path": "a.py"})
    gateway = ScriptedGateway([call, ["Reading both. ", call, ToolCall("read_file", {"path": "b.py"})]])
    first = gateway.complete(ASK)
    assert (first.tool_calls, first.finish_reason) == ((call,), "tool_calls")
    second = gateway.complete(ASK)
    assert second.text == "Reading both. "
    assert [c.arguments["path"] for c in second.tool_calls] == ["a.py", "b.py"]


def test_a_completion_step_is_returned_unchanged():
    given = Completion(Message.assistant("x"), "length", Usage(7, 1), "m")
    assert ScriptedGateway([given]).complete(ASK) is given


def test_usage_is_filled_in_from_the_estimate_when_the_step_has_none():
    gateway = ScriptedGateway(["four"])
    usage = gateway.complete(ASK).usage
    assert usage.prompt_tokens == gateway.count_tokens(ASK) > 0
    assert usage.completion_tokens == 2  # "four": 4 characters at 3.2 per token, rounded up


def test_exception_steps_are_raised_as_instances_or_classes():
    gateway = ScriptedGateway([ContextOverflow("too long", status_code=400), TimeoutError])
    with pytest.raises(ContextOverflow, match="too long"):
        gateway.complete(ASK)
    with pytest.raises(TimeoutError):
        gateway.complete(ASK)


def test_a_callable_step_sees_the_request_and_its_result_is_played():
    seen = []

    def check(messages, tools):
        seen.append(([m.content for m in messages], [t.name for t in tools]))
        return ToolCall("write_file", {"path": "x"})

    gateway = ScriptedGateway([check])
    completion = gateway.complete(ASK, [])
    assert seen == [(["be brief", "hello"], [])]
    assert completion.tool_calls[0].name == "write_file"


def test_an_assertion_inside_a_callable_step_fails_the_test():
    def expects_tools(messages, tools):
        assert tools, "the loop must offer tools"
        return "ok"

    with pytest.raises(AssertionError, match="the loop must offer tools"):
        ScriptedGateway([expects_tools]).complete(ASK)


def test_an_unexpected_extra_call_fails_with_what_came_in():
    gateway = ScriptedGateway(["only one"])
    gateway.complete(ASK)
    with pytest.raises(AssertionError, match=r"unexpected call #2; the script has 1 step\(s\). "
                                             r"Last message of the request: user: 'hello'"):
        gateway.complete(ASK)


def test_leftover_steps_are_reported_by_assert_done():
    gateway = ScriptedGateway(["one", ToolCall("read_file", {}), "three"])
    gateway.complete(ASK)
    with pytest.raises(AssertionError, match=r"2 step\(s\) never used after 1 call\(s\): "
                                             r"#2 ToolCall\('read_file'\); #3 'three'"):
        gateway.assert_done()


def test_the_context_manager_checks_for_leftovers_on_exit():
    with pytest.raises(AssertionError, match="never used"):
        with ScriptedGateway(["one", "two"]) as gateway:
            gateway.complete(ASK)


def test_the_context_manager_lets_an_earlier_failure_through_unchanged():
    with pytest.raises(KeyError):
        with ScriptedGateway(["one", "two"]):
            raise KeyError("the real problem")


def test_every_request_is_recorded(tools):
    gateway = ScriptedGateway(["a", "b"])
    gateway.complete(ASK, tools, max_tokens=100, temperature=0.5)
    gateway.complete(ASK[:1])
    assert gateway.calls == 2
    first, second = gateway.requests
    assert (first.messages, first.tool_names, first.max_tokens, first.temperature) == (
        tuple(ASK), ["write_file", "read_file"], 100, 0.5)
    assert second.last == ASK[0] and second.tools == ()


def test_text_streams_in_small_pieces_then_tool_call_events():
    events: list[StreamEvent] = []
    gateway = ScriptedGateway([["Let me look.", ToolCall("read_file", {"path": "a"})]], piece_chars=4)
    gateway.complete(ASK, on_event=events.append)
    assert [(e.kind, e.text or e.name) for e in events] == [
        ("text", "Let "), ("text", "me l"), ("text", "ook."), ("tool_call", "read_file")]


def test_cancel_during_the_stream_raises_interrupted_after_the_pieces_shown():
    cancel = threading.Event()
    shown: list[str] = []

    def on_event(event: StreamEvent) -> None:
        shown.append(event.text)
        cancel.set()

    gateway = ScriptedGateway(["A long answer"], piece_chars=3)
    with pytest.raises(Interrupted):
        gateway.complete(ASK, on_event=on_event, cancel=cancel)
    assert shown == ["A l"]


def test_cancel_set_before_the_call_raises_and_the_call_is_still_recorded():
    cancel = threading.Event()
    cancel.set()
    gateway = ScriptedGateway(["never shown"])
    with pytest.raises(Interrupted):
        gateway.complete(ASK, cancel=cancel)
    assert gateway.calls == 1 and gateway.remaining == []


def test_context_length_is_what_the_script_says():
    assert ScriptedGateway([], context=2048).context_length() == 2048
    assert ScriptedGateway([], context=None).context_length() is None


def test_a_step_of_the_wrong_kind_is_a_type_error():
    with pytest.raises(TypeError, match="script step 0 is not"):
        ScriptedGateway([42]).complete(ASK)
