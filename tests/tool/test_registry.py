"""The tool registry: what is offered, how calls are checked, timed out, run together and clipped."""

from __future__ import annotations

import threading
import time

import pytest

from core.errors import ToolArgumentError, ToolError, UnknownToolError
from core.messages import ToolCall
from core.tools import Tool, ToolResult, object_schema
from tool.registry import ToolRegistry, clip_text, signature


def make(name: str, fn, *, read_only: bool = False, timeout_s: float | None = None, **props) -> Tool:
    props = props or {"text": {"type": "string"}}
    return Tool(name, f"The {name} tool.", object_schema(props, list(props)[:1]), fn, read_only=read_only,
                timeout_s=timeout_s)


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # lets abandoned worker threads end


def test_registering_the_same_name_twice_is_a_bug():
    registry = ToolRegistry()
    registry.register(make("echo", lambda text: text))
    with pytest.raises(ValueError, match="a tool named 'echo' is already registered"):
        registry.register(make("echo", lambda text: text))


def test_a_tool_with_an_invalid_schema_is_refused_at_registration():
    registry = ToolRegistry()
    bad = Tool("bad", "Bad.", {"type": "object", "properties": {"x": {"type": "strnig"}}}, lambda x: x)
    with pytest.raises(ValueError, match="tool 'bad' has an invalid JSON schema"):
        registry.register(bad)


def test_providers_are_asked_on_every_call_and_registered_names_win():
    registry = ToolRegistry()
    registry.register(make("echo", lambda text: text))
    notices: list[str] = []
    registry.on_notice = notices.append

    class Provider:
        def __init__(self):
            self.offer: list[Tool] = []

        def tools(self):
            return list(self.offer)

    provider = Provider()
    registry.add_provider(provider)
    assert [t.name for t in registry.tools()] == ["echo"]
    provider.offer = [make("shout", str.upper), make("echo", lambda text: "impostor")]
    assert [t.name for t in registry.tools()] == ["echo", "shout"]
    registry.tools()
    assert notices == ["tool 'echo' from builtin ignored: the name is taken"]  # once, not per call


def test_a_provider_that_raises_is_skipped_and_reported_once():
    registry = ToolRegistry()
    registry.register(make("echo", lambda text: text))
    notices: list[str] = []
    registry.on_notice = notices.append

    class Broken:
        def tools(self):
            raise OSError("skills folder unreadable")

    registry.add_provider(Broken())
    assert [t.name for t in registry.tools()] == ["echo"]
    assert [t.name for t in registry.tools()] == ["echo"]
    assert notices == ["tool provider Broken failed: skills folder unreadable"]


def test_an_unknown_tool_names_the_tools_offered():
    registry = ToolRegistry()
    registry.register_all([make("b", str), make("a", str)])
    with pytest.raises(UnknownToolError) as info:
        registry.lookup("c")
    assert str(info.value) == "there is no tool named 'c' (the tools you can call are: a, b)"


def test_validation_errors_say_which_field_and_what_was_expected():
    tool = Tool("read_file", "Read.", object_schema({
        "path": {"type": "string"}, "start_line": {"type": "integer"}, "mode": {"enum": ["text", "hex"]}},
        ["path"]), lambda **kw: "")
    registry = ToolRegistry()
    outcome = registry.execute(ToolCall("read_file", {"start_line": "ten", "mode": "bin", "colour": 1}), [tool])
    assert outcome.failure == "format"
    assert outcome.result.content == (
        "Error: invalid arguments for read_file: 'path' is required but missing; "
        "Additional properties are not allowed ('colour' was unexpected); the allowed fields are: mode, path, start_line; "
        "at 'mode': expected one of \"text\", \"hex\", got \"bin\"; (and 1 more)\n"
        "Hint: call it as read_file(path: string, start_line?: integer, mode?: \"text\"|\"hex\")")


def test_plain_string_numbers_and_booleans_are_converted_for_typed_fields():
    tool = Tool("t", "T.", object_schema({"n": {"type": "integer"}, "x": {"type": "number"},
                                          "b": {"type": "boolean"}, "s": {"type": "string"}}), lambda **kw: "")
    registry = ToolRegistry()
    assert registry.validate(tool, {"n": " 12 ", "x": "2.5", "b": "True", "s": "7"}) == {"n": 12, "x": 2.5, "b": True, "s": "7"}
    with pytest.raises(ToolArgumentError, match="at 'n': expected integer, got \"1.5\""):
        registry.validate(tool, {"n": "1.5"})


def test_signature_marks_optional_arguments():
    tool = make("grep", str, pattern={"type": "string"}, max_results={"type": "integer"})
    assert signature(tool) == "grep(pattern: string, max_results?: integer)"


def test_a_tool_error_becomes_an_error_result_with_its_hint():
    def fail(text: str) -> str:
        raise ToolError(f"{text!r} does not exist", hint="list_files shows what exists")

    outcome = ToolRegistry().execute(ToolCall("fail", {"text": "a.txt"}), [make("fail", fail)])
    assert outcome.failure == "failed"
    assert outcome.result == ToolResult("Error: 'a.txt' does not exist\nHint: list_files shows what exists", ok=False,
                                        summary="'a.txt' does not exist")


def test_a_bug_in_a_tool_is_raised_not_hidden():
    def broken(text: str) -> str:
        return {}["missing"]

    with pytest.raises(KeyError):
        ToolRegistry().execute(ToolCall("broken", {"text": ""}), [make("broken", broken)])


def test_a_tool_that_hangs_is_abandoned_at_its_timeout(release):
    hang = make("hang", lambda text: release.wait(60) and "late", timeout_s=0.2)
    start = time.monotonic()
    outcome = ToolRegistry().execute(ToolCall("hang", {"text": ""}), [hang])
    assert time.monotonic() - start < 2
    assert outcome.failure == "timeout"
    assert outcome.result.content.startswith("Error: hang did not finish within 0.2 s and was abandoned")


def test_the_default_timeout_applies_when_the_tool_has_none(release):
    registry = ToolRegistry(default_timeout_s=0.1)
    outcome = registry.execute(ToolCall("hang", {"text": ""}), [make("hang", lambda text: release.wait(60) and "")])
    assert outcome.failure == "timeout"


def test_cancel_stops_waiting_for_a_running_tool(release):
    cancel = threading.Event()
    started = threading.Event()

    def slow(text: str) -> str:
        started.set()
        release.wait(60)
        return "done"

    threading.Thread(target=lambda: (started.wait(10), cancel.set())).start()
    outcome = ToolRegistry().execute(ToolCall("slow", {"text": ""}), [make("slow", slow)], cancel=cancel)
    assert outcome.interrupted
    assert outcome.result.content == "Error: interrupted by the person before the tool finished"


def test_read_only_calls_run_together_and_others_one_at_a_time():
    barrier = threading.Barrier(3, timeout=5)
    active = 0
    most = 0
    lock = threading.Lock()

    def meet(text: str) -> str:
        barrier.wait()  # passes only when all three run at once
        return text

    def write(text: str) -> str:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.02)  # widens the window in which an overlap would show
        with lock:
            active -= 1
        return text

    tools = [make("meet", meet, read_only=True), make("write", write)]
    calls = [ToolCall("meet", {"text": str(i)}) for i in range(3)] + [ToolCall("write", {"text": f"w{i}"}) for i in range(3)]
    order: list[str] = []
    outcomes = ToolRegistry().execute_many(calls, tools, on_start=lambda c: order.append("start " + c.arguments["text"]),
                                           on_end=lambda o: order.append("end " + o.result.content))
    assert [o.result.content for o in outcomes] == ["0", "1", "2", "w0", "w1", "w2"]
    assert most == 1
    assert order == ["start 0", "start 1", "start 2", "end 0", "end 1", "end 2",
                     "start w0", "end w0", "start w1", "end w1", "start w2", "end w2"]


def test_calls_not_started_when_cancelled_are_reported_as_interrupted():
    cancel = threading.Event()
    ran: list[str] = []

    def first(text: str) -> str:
        ran.append(text)
        cancel.set()
        return "ok"

    tools = [make("first", first)]
    outcomes = ToolRegistry().execute_many([ToolCall("first", {"text": "1"}), ToolCall("first", {"text": "2"})], tools,
                                           cancel=cancel)
    assert ran == ["1"]
    assert [o.failure for o in outcomes] == ["", "interrupted"]


def test_long_results_are_clipped_to_the_token_budget_with_head_and_tail():
    rows = "".join(f"row {i}\n" for i in range(1, 5001))
    outcome = ToolRegistry(result_tokens=200).execute(ToolCall("dump", {"text": ""}), [make("dump", lambda text: rows)])
    content = outcome.result.content
    assert outcome.result.data == {"clipped": True}
    assert content.startswith("row 1\nrow 2\n") and content.endswith("row 5000\n")
    assert "of 5000 left out" in content and "read_file with a line range" in content
    assert len(content) <= 200 * 3 + 300


def test_clipping_a_single_long_line_cuts_by_characters():
    clipped = clip_text("a" * 5000 + "z" * 5000, 400)
    assert clipped.startswith("a" * 100) and clipped.endswith("z" * 100)
    assert "characters left out to fit the context" in clipped


def test_short_results_are_untouched():
    assert clip_text("short\n", 10) == "short\n"
