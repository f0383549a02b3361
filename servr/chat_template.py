"""Chat prompts from the model's own Jinja template, as llama.cpp and Transformers render them.

The template comes from the model (GGUF ``tokenizer.chat_template``). It runs in Jinja's
sandbox with the helpers chat templates expect (``raise_exception``, ``strftime_now``, a
``tojson`` that does not HTML-escape). History is normalised first: assistant tool-call
arguments sent as JSON strings become objects (templates write them with ``tojson``).

A template that knows nothing of tools (SmolLM2's plain ChatML) still gets them: the tools are
described in the system message in Qwen2.5's ``<tools>``/``<tool_call>`` format, earlier calls are
written back as ``<tool_call>`` blocks and tool results as ``<tool_response>`` blocks in a user
turn, so the model sees one consistent convention and the shared parser reads its answer.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from core.toolparse import decode_arguments
from servr.engines.base import ChatTemplate

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
    "</tool_call>"
)


class TemplateError(ValueError):
    """The template refused the conversation (its ``raise_exception``) or failed to render it."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def tools_system_text(tools: list[dict[str, Any]]) -> str:
    """Qwen2.5's description of the tools, for templates that have none of their own."""
    return TOOLS_PREAMBLE + "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools) + TOOLS_POSTAMBLE


def _call_block(call: dict[str, Any]) -> str:
    fn = call.get("function", call)
    return "<tool_call>\n" + json.dumps({"name": fn["name"], "arguments": fn["arguments"]}, ensure_ascii=False) + "\n</tool_call>"


class ChatRenderer:
    """Renders conversations with one model's chat template."""

    def __init__(self, template: ChatTemplate) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self.template = template
        self._compiled = env.from_string(template.source)
        # how a template shows what it supports: Qwen's reads `tools` and `message.tool_calls`
        self.knows_tools = "tools" in template.source
        self.knows_tool_calls = "tool_calls" in template.source

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
               add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (OpenAI-shaped dicts) with ``tools`` offered."""
        msgs = [_normalise(m) for m in messages]
        if tools and not self.knows_tools:
            msgs = _with_tools_in_system(msgs, tools)
            tools = None
        if not self.knows_tool_calls:
            msgs = _tool_turns_as_text(msgs)
        try:
            return self._compiled.render(
                messages=msgs, tools=tools or None, add_generation_prompt=add_generation_prompt,
                bos_token=self.template.bos_token, eos_token=self.template.eos_token,
            )
        except TemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the model's chat template could not render these messages: {exc}") from None


def _normalise(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    if out.get("role") == "developer":
        out["role"] = "system"
    if out.get("content") is None:
        out["content"] = ""
    calls = out.get("tool_calls")
    if calls:
        fixed = []
        for call in calls:
            fn = dict(call.get("function", {}))
            try:
                fn["arguments"] = decode_arguments(fn.get("arguments"))
            except ValueError:
                pass  # leave what the client sent; the template writes it as it is
            fixed.append({**call, "type": "function", "function": fn})
        out["tool_calls"] = fixed
    else:
        out.pop("tool_calls", None)
    return out


def _with_tools_in_system(msgs: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = tools_system_text(tools)
    if msgs and msgs[0]["role"] == "system":
        first = dict(msgs[0])
        first["content"] = (first["content"] + "\n\n" + text) if first["content"] else text
        return [first, *msgs[1:]]
    return [{"role": "system", "content": text}, *msgs]


def _tool_turns_as_text(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in msgs:
        if m["role"] == "assistant" and m.get("tool_calls"):
            blocks = "\n".join(_call_block(c) for c in m["tool_calls"])
            content = (m["content"] + "\n" + blocks) if m["content"] else blocks
            out.append({"role": "assistant", "content": content})
        elif m["role"] == "tool":
            block = "<tool_response>\n" + m["content"] + "\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + block}
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        else:
            out.append(m)
    for m in out:
        m.pop("_tool_results", None)
    return out
