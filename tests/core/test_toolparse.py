"""The shared tool-call parser: every format, the rules, and the streaming filter."""

from __future__ import annotations

import json

import pytest

from core.toolparse import ParsedCall, ParseResult, ToolCallStreamFilter, decode_arguments, parse_tool_calls

OFFERED = {"read_file", "write_file"}


def call_block(name: str, args: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def test_tool_call_block_is_parsed_and_removed_from_content():
    r = parse_tool_calls("Let me look.\n" + call_block("read_file", {"path": "a.py"}), OFFERED)
    assert r.format == "tool_call"
    assert r.calls == (ParsedCall("read_file", {"path": "a.py"}),)
    assert r.content == "Let me look."


def test_several_blocks_keep_their_order():
    text = call_block("read_file", {"path": "a"}) + "\n" + call_block("write_file", {"path": "b", "content": "x"})
    r = parse_tool_calls(text, OFFERED)
    assert [c.name for c in r.calls] == ["read_file", "write_file"]
    assert r.calls[1].arguments == {"path": "b", "content": "x"}


def test_unclosed_last_block_counts():
    r = parse_tool_calls('<tool_call>\n{"name": "read_file", "arguments": {"path": "a"}}', OFFERED)
    assert r.calls == (ParsedCall("read_file", {"path": "a"}),)


def test_closing_tag_inside_a_string_value_does_not_end_the_block():
    content = 'print("</tool_call>")'
    r = parse_tool_calls(call_block("write_file", {"path": "x.py", "content": content}) + " after", OFFERED)
    assert r.calls == (ParsedCall("write_file", {"path": "x.py", "content": content}),)
    assert r.content == "after"


def test_string_values_are_never_rewritten():
    tricky = "it's {\"a\": 1}, \\n and 'quotes' and ```fences```"
    r = parse_tool_calls(call_block("write_file", {"path": "p", "content": tricky}), OFFERED)
    assert r.calls[0].arguments["content"] == tricky


def test_arguments_given_as_json_string_are_decoded_even_twice():
    once = json.dumps({"path": "a"})
    twice = json.dumps(once)
    for raw in (once, twice):
        text = '<tool_call>{"name": "read_file", "arguments": ' + json.dumps(raw) + "}</tool_call>"
        assert parse_tool_calls(text, OFFERED).calls == (ParsedCall("read_file", {"path": "a"}),)


def test_fenced_json_call():
    text = 'I will read it.\n```json\n{"name": "read_file", "arguments": {"path": "b"}}\n```\nThen edit.'
    r = parse_tool_calls(text, OFFERED)
    assert r.format == "fence"
    assert r.calls == (ParsedCall("read_file", {"path": "b"}),)
    assert r.content == "I will read it.\n\nThen edit."


def test_fenced_list_of_calls():
    calls = [{"name": "read_file", "arguments": {"path": "a"}}, {"name": "read_file", "arguments": {"path": "b"}}]
    r = parse_tool_calls("```json\n" + json.dumps(calls) + "\n```", OFFERED)
    assert [c.arguments["path"] for c in r.calls] == ["a", "b"]


def test_bare_object_with_parameters_or_openai_shape():
    r1 = parse_tool_calls('ok {"name": "read_file", "parameters": {"path": "c"}}', OFFERED)
    r2 = parse_tool_calls('{"function": {"name": "read_file", "arguments": "{\\"path\\": \\"d\\"}"}}', OFFERED)
    assert r1.format == "bare" and r1.calls == (ParsedCall("read_file", {"path": "c"}),) and r1.content == "ok"
    assert r2.calls == (ParsedCall("read_file", {"path": "d"}),)


def test_seed_tag_format():
    r = parse_tool_calls('<tool name="read_file">{"path": "e"}</tool>', OFFERED)
    assert r.format == "tag"
    assert r.calls == (ParsedCall("read_file", {"path": "e"}),)


def test_block_format_wins_over_later_formats():
    text = call_block("read_file", {"path": "a"}) + '\n{"name": "write_file", "arguments": {"path": "b"}}'
    r = parse_tool_calls(text, OFFERED)
    assert [c.name for c in r.calls] == ["read_file"]


def test_unknown_name_in_explicit_markup_is_reported_not_run():
    r = parse_tool_calls(call_block("rm_rf", {}), OFFERED)
    assert len(r.calls) == 1 and r.calls[0].error is not None
    assert "unknown tool 'rm_rf'" in r.calls[0].error and "read_file" in r.calls[0].error


def test_unknown_name_in_bare_json_is_plain_text():
    text = 'The config is {"name": "db", "arguments": {"x": 1}}.'
    r = parse_tool_calls(text, OFFERED)
    assert r.calls == () and r.content == text


def test_json_that_is_not_a_call_is_left_alone():
    text = 'Here is data: {"path": "a", "size": 3} and [1, 2, 3]'
    assert parse_tool_calls(text, OFFERED) == parse_tool_calls(text, OFFERED)
    assert parse_tool_calls(text, OFFERED).calls == ()


def test_broken_json_in_a_block_becomes_an_error_call():
    r = parse_tool_calls("<tool_call>{name: read_file}</tool_call> tail", OFFERED)
    assert r.calls[0].error and "not valid JSON" in r.calls[0].error
    assert r.content == "tail"


def test_arguments_that_are_not_an_object_are_an_error_in_a_block():
    r = parse_tool_calls(call_block("read_file", [1, 2]), OFFERED)
    assert r.calls[0].error == "arguments must be a JSON object, got list"


def test_no_tools_offered_means_no_calls():
    text = call_block("read_file", {"path": "a"})
    assert parse_tool_calls(text, set()).calls == ()


def test_any_name_accepted_when_allowed_is_none():
    assert parse_tool_calls(call_block("anything", {"a": 1}), None).calls == (ParsedCall("anything", {"a": 1}),)


@pytest.mark.parametrize("raw,expected", [("", {}), (None, {}), ("{}", {}), ({"a": 1}, {"a": 1})])
def test_decode_arguments_accepts_empty_and_objects(raw, expected):
    assert decode_arguments(raw) == expected


@pytest.mark.parametrize("raw", ["[1]", "3", "{oops", 5])
def test_decode_arguments_refuses_non_objects(raw):
    with pytest.raises(ValueError):
        decode_arguments(raw)


def stream(text: str, allowed=OFFERED, size: int = 1):
    f = ToolCallStreamFilter(allowed)
    shown = "".join(f.feed(text[i:i + size]) for i in range(0, len(text), size))
    final = f.finish()
    return shown, final


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_stream_never_shows_block_markup(size):
    text = "Reading now. " + call_block("read_file", {"path": "a"}) + "\n" + call_block("write_file", {"path": "b", "content": "</tool_call>"})
    shown, final = stream(text, size=size)
    assert "<tool" not in shown and "tool_call" not in shown
    assert shown.strip() == "Reading now."
    assert [c.name for c in final.calls] == ["read_file", "write_file"]
    assert final.calls[1].arguments["content"] == "</tool_call>"


def test_stream_plain_text_passes_through_whole():
    text = "No tools needed: 2 < 3 and <b>bold</b>, also <tool-less tag."
    shown, final = stream(text)
    assert shown + final.content == text
    assert final.calls == ()


def test_stream_holds_a_leading_bare_object_until_the_end():
    text = '{"name": "read_file", "arguments": {"path": "a"}}'
    shown, final = stream(text)
    assert shown == ""
    assert final.calls == (ParsedCall("read_file", {"path": "a"}),)


def test_stream_leading_json_that_is_not_a_call_is_returned_at_finish():
    text = '{"answer": 42}'
    shown, final = stream(text)
    assert shown == "" and final.content == text and final.calls == ()


def test_stream_unclosed_block_at_end_is_a_call():
    shown, final = stream('<tool_call>\n{"name": "read_file", "arguments": {"path": "z"}}')
    assert shown == ""
    assert final.calls == (ParsedCall("read_file", {"path": "z"}),)


def test_stream_fenced_call_after_prose_is_still_found():
    text = 'Sure.\n```json\n{"name": "read_file", "arguments": {"path": "q"}}\n```'
    shown, final = stream(text)
    assert shown.startswith("Sure.")
    assert final.calls == (ParsedCall("read_file", {"path": "q"}),)


def test_stream_seed_tag_format_is_held_and_parsed():
    shown, final = stream('<tool name="read_file">{"path": "t"}</tool>')
    assert shown == ""
    assert final.calls == (ParsedCall("read_file", {"path": "t"}),)


CALL_JSON = '{"name": "read_file", "arguments": {"path": "q"}}'


def stream_steps(text: str, size: int, allowed=OFFERED):
    """What each piece of the stream shows, and the result at finish."""
    f = ToolCallStreamFilter(allowed)
    steps = [f.feed(text[i:i + size]) for i in range(0, len(text), size)]
    return steps, f.finish()


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
@pytest.mark.parametrize("info", ["", "json"])
def test_stream_fenced_call_after_prose_never_shows_its_fence(size, info):
    text = f"Let me look.\n```{info}\n{CALL_JSON}\n```\nThen I will fix it."
    shown, final = stream(text, size=size)
    assert shown + final.content == "Let me look.\nThen I will fix it."
    assert final.calls == (ParsedCall("read_file", {"path": "q"}),)
    assert final.format == "fence"


def test_stream_fenced_json_that_is_not_a_call_is_shown_when_it_closes():
    text = 'The config:\n```json\n{"debug": true}\n```\nand more'
    steps, final = stream_steps(text, 1)
    closed = text.index("```\nand") + len("```\n")
    assert "".join(steps[:closed]) == 'The config:\n```json\n{"debug": true}\n```\n'  # released at its closing line
    assert "".join(steps) + final.content == text
    assert final.calls == ()


def test_stream_a_fenced_call_to_a_tool_not_offered_comes_back_as_an_error_listing_the_tools():
    text = 'Try:\n```json\n{"name": "rm_rf", "arguments": {}}\n```\n'
    shown, final = stream(text)
    assert shown + final.content == "Try:\n"
    assert [c.name for c in final.calls] == ["rm_rf"]
    assert final.calls[0].error.startswith("unknown tool 'rm_rf'; the tools offered are: read_file, write_file")


def test_calls_small_models_get_wrong_are_read_as_meant():
    flattened = parse_tool_calls('```json\n{"name": "write_file", "path": "a.py", "content": "x = 1"}\n```', OFFERED)
    assert flattened.calls == (ParsedCall("write_file", {"path": "a.py", "content": "x = 1"}),)
    triple = parse_tool_calls('<tool_call>\n{"name": "write_file", "arguments": {"path": "a.py", '
                              '"content": """def f():\n    return "hi"\n"""}}\n</tool_call>', OFFERED)
    assert triple.calls == (ParsedCall("write_file", {"path": "a.py", "content": 'def f():\n    return "hi"\n'}),)
    unknown = parse_tool_calls('{"name": "pytest", "arguments": {"args": "-q"}}', OFFERED)
    assert unknown.calls[0].name == "pytest" and "the tools offered are: read_file, write_file" in unknown.calls[0].error


def test_data_that_looks_like_a_call_stays_text():
    for text in ('{"name": "Alice", "age": 3}', 'The config is {"name": "db", "arguments": {"x": 1}} here, as you see.',
                 '```json\n{"name": "count_py"}\n```'):
        assert parse_tool_calls(text, OFFERED) == ParseResult(text)


def test_stream_python_fences_stream_as_they_come_and_their_closing_opens_nothing():
    text = "Code:\n```python\nx = 1\n```\nDone, and ``` inline.\n"
    steps, final = stream_steps(text, 1)
    assert "".join(steps[:text.index("x = 1") + 5]) == "Code:\n```python\nx = 1"  # not held until it closes
    assert "".join(steps) == text and final.content == "" and final.calls == ()


def test_stream_an_unclosed_fence_at_the_end_is_a_call_or_text():
    shown, final = stream(f"Reading.\n```json\n{CALL_JSON}\n")
    assert (shown, final.content, final.calls) == ("Reading.\n", "", (ParsedCall("read_file", {"path": "q"}),))
    shown, final = stream("Example:\n```\nnot json at all")
    assert (shown, final.content, final.calls) == ("Example:\n", "```\nnot json at all", ())


def test_stream_a_fence_inside_a_json_string_does_not_close_the_call():
    call = json.dumps({"name": "write_file", "arguments": {"path": "R.md", "content": "```py\nx\n```\n"}})
    text = f"Writing.\n```json\n{call}\n```\n"
    shown, final = stream(text, size=3)
    assert shown + final.content == "Writing.\n"
    assert final.calls == (ParsedCall("write_file", {"path": "R.md", "content": "```py\nx\n```\n"}),)


def test_stream_a_fence_in_the_middle_of_a_line_is_not_held_and_its_call_is_still_found():
    text = f"Use ```json {CALL_JSON}``` now"
    steps, final = stream_steps(text, 1)
    assert "".join(steps) == text
    assert final.calls == (ParsedCall("read_file", {"path": "q"}),)


def test_quotes_left_unescaped_inside_a_string_and_raw_newlines_are_read_as_text():
    text = ('```json\n{"name": "write_file", "arguments": {"path": "a.py", "content": "def f():\n'
            '    """Say hi."""\n    return 1\n"}}\n```')
    assert parse_tool_calls(text, OFFERED).calls == (
        ParsedCall("write_file", {"path": "a.py", "content": 'def f():\n    """Say hi."""\n    return 1\n'}),)


def test_a_repair_that_cannot_be_sure_leaves_the_text_alone():
    text = '{"name": "write_file", "arguments": {"path": "a.py", "content": "print("a", "b")"}}'
    assert parse_tool_calls(text, OFFERED) == ParseResult(text)
