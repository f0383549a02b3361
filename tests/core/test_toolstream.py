"""A ``<tool_call>`` tag mentioned in prose is text, in the parser and in the streaming filter."""

from __future__ import annotations

import json

import pytest

from core.toolparse import ParsedCall, ToolCallStreamFilter, parse_tool_calls
from core.toolstream import ToolCallStreamFilter as FromToolstream

OFFERED = {"read_file", "write_file"}
PROSE = "Use `<tool_call>` tags to call tools. Each holds a JSON object with the name and the arguments."
CALL = "<tool_call>\n" + json.dumps({"name": "read_file", "arguments": {"path": "a"}}) + "\n</tool_call>"


def stream(text: str, size: int) -> tuple[str, list[str], object]:
    f = ToolCallStreamFilter(OFFERED)
    steps = [f.feed(text[i:i + size]) for i in range(0, len(text), size)]
    return "".join(steps), steps, f.finish()


def test_the_filter_is_the_same_class_from_both_modules():
    assert ToolCallStreamFilter is FromToolstream


@pytest.mark.parametrize("text", [PROSE, "The <tool_call> tag, then </tool_call> closes it.", "Type <tool_call>",
                                  "Type <tool_call>   \n", "<tool_call> is how Qwen marks a call."])
def test_a_tag_not_followed_by_json_is_plain_text(text):
    assert parse_tool_calls(text, OFFERED).calls == ()
    assert parse_tool_calls(text, OFFERED).content == text


def test_a_prose_mention_before_a_real_call_keeps_both():
    r = parse_tool_calls(PROSE + "\n" + CALL, OFFERED)
    assert r.calls == (ParsedCall("read_file", {"path": "a"}),)
    assert r.content == PROSE


def test_a_tag_followed_by_broken_json_is_still_an_error_call():
    r = parse_tool_calls("<tool_call> [not json</tool_call> rest", OFFERED)
    assert len(r.calls) == 1 and "not valid JSON" in (r.calls[0].error or "")
    assert r.content == "rest"


@pytest.mark.parametrize("size", [1, 2, 5, 11, 1000])
def test_stream_shows_prose_that_mentions_the_tag(size):
    shown, _, final = stream(PROSE, size)
    assert shown + final.content == PROSE
    assert final.calls == ()


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_stream_prose_mention_then_a_real_call(size):
    shown, _, final = stream(PROSE + "\n" + CALL + "\nDone.", size)
    assert shown + final.content == PROSE + "\n\nDone."
    assert final.calls == (ParsedCall("read_file", {"path": "a"}),)


def test_stream_holds_the_tag_only_until_its_first_non_space_character():
    f = ToolCallStreamFilter(OFFERED)
    assert f.feed("Say <tool_call>") == "Say "
    assert f.feed("  ") == ""
    assert f.feed("x and more") == "<tool_call>  x and more"


def test_stream_a_tag_with_only_whitespace_at_the_end_is_text():
    shown, _, final = stream("Type <tool_call> \n", 1)
    assert shown + final.content == "Type <tool_call> \n"
    assert final.calls == ()
