"""``/v1/chat/completions``: from the request to a prompt and a plan, from events to OpenAI JSON.

Tool calls in the model's text are found by the shared parser (``core.toolparse``); streaming
uses its :class:`ToolCallStreamFilter`, so ``<tool_call>`` markup never reaches the client as
content and each call goes out as OpenAI deltas once it is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

from core.toolparse import ParsedCall, ToolCallStreamFilter, parse_tool_calls
from core.messages import new_call_id
from servr.chat_template import ChatRenderer, TemplateError
from servr.engines.base import Constraint, Engine, SamplingParams, TokenLogprob, ToolSpec
from servr.errors import APIError, bad_request, context_exceeded
from servr.generation import Failed, Finished, GenerationStream, Progress, collect
from servr.schemas import ChatCompletionRequest
from servr import wire


@dataclass(frozen=True)
class ChatPlan:
    """What one chat request asks the model to do."""

    prompt: list[int]
    params: SamplingParams
    stops: list[str]
    allowed_tools: tuple[str, ...] | None  # names to parse calls for; None: no tool parsing
    parallel_tool_calls: bool
    include_usage: bool
    logprobs: bool
    return_progress: bool = False  # streaming only: prompt_progress chunks as llama-server sends them


def _constraint(req: ChatCompletionRequest, tools: list[ToolSpec]) -> Constraint | None:
    choice = req.tool_choice
    if tools and choice == "required":
        return Constraint("tool_call", tools=tuple(tools))
    if tools and choice is not None and not isinstance(choice, str):
        named = [t for t in tools if t.name == choice.function.name]
        return Constraint("tool_call", tools=tuple(named))
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return Constraint("json")
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise bad_request("response_format json_schema needs json_schema.schema", param="response_format")
    return Constraint("json_schema", schema=fmt.json_schema.schema_)


def plan_chat(req: ChatCompletionRequest, engine: Engine, renderer: ChatRenderer) -> ChatPlan:
    """Check the request and render its prompt (blocking: run it off the event loop)."""
    if req.n != 1:
        raise bad_request(f"n={req.n} is not supported: this server generates one choice per request; send n=1 "
                          "(or several requests)", param="n")
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list) and any(p.type != "text" for p in m.content):
            raise bad_request("only text content parts are supported by this model", param=f"messages.{i}.content")
        if m.role == "tool" and not m.tool_call_id:
            raise bad_request("a tool message needs tool_call_id", param=f"messages.{i}.tool_call_id")
    tools = [ToolSpec(t.function.name, t.function.parameters or {"type": "object", "properties": {}})
             for t in req.tools or []]
    names = [t.name for t in tools]
    choice = req.tool_choice
    if choice == "required" and not tools:
        raise bad_request("tool_choice 'required' needs tools", param="tool_choice")
    if choice is not None and not isinstance(choice, str) and choice.function.name not in names:
        offered = ", ".join(names) or "none"
        raise bad_request(f"tool_choice names {choice.function.name!r}, which is not in tools (offered: {offered})",
                          param="tool_choice")
    offer = tools and choice != "none"
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    for m, src in zip(messages, req.messages):
        m["content"] = src.text()
    tool_dicts = [t.model_dump(exclude_none=True) for t in req.tools or []] if offer else None
    try:
        text = renderer.render(messages, tool_dicts)
    except TemplateError as exc:
        raise bad_request(str(exc), param="messages") from None
    prompt = engine.encode_prompt(text)
    max_tokens = req.max_completion_tokens or req.max_tokens
    if len(prompt) >= engine.n_ctx or (max_tokens is not None and len(prompt) + max_tokens > engine.n_ctx):
        raise context_exceeded(engine.n_ctx, len(prompt), max_tokens)
    constraint = _constraint(req, tools) if (offer or req.response_format) else None
    if constraint is not None:
        try:
            engine.check_constraint(constraint)
        except ValueError as exc:
            raise bad_request(str(exc), param="tools" if constraint.kind == "tool_call" else "response_format") from None
    top = (req.top_logprobs or 0) if req.logprobs else None
    params = SamplingParams(
        max_tokens=max_tokens or engine.n_ctx - len(prompt), temperature=req.temperature, top_p=req.top_p,
        seed=req.seed, presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
        top_logprobs=top, constraint=constraint,
    )
    return ChatPlan(prompt, params, req.stop_list(), tuple(names) if offer else None, req.parallel_tool_calls,
                    bool(req.stream_options and req.stream_options.include_usage), req.logprobs,
                    bool(req.stream and req.return_progress))


def _valid(calls: tuple[ParsedCall, ...], parallel: bool) -> list[ParsedCall]:
    ok = [c for c in calls if c.error is None and c.name]
    return ok if parallel else ok[:1]


def _call_json(call: ParsedCall, call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}


async def complete(stream: GenerationStream, plan: ChatPlan, model: str) -> dict[str, Any]:
    """The whole answer as one ``chat.completion`` object."""
    answer = await collect(stream)
    text, logprobs, done = answer.text, answer.logprobs, answer.finished
    message: dict[str, Any] = {"role": "assistant", "content": text}
    reason = wire.finish_reason(done.finish_reason)
    if plan.allowed_tools is not None:
        parsed = parse_tool_calls(text, plan.allowed_tools)
        calls = _valid(parsed.calls, plan.parallel_tool_calls)
        if calls:
            message = {"role": "assistant", "content": parsed.content or None,
                       "tool_calls": [_call_json(c, new_call_id()) for c in calls]}
            reason = "tool_calls"
    return {
        "id": wire.new_id("chatcmpl"), "object": "chat.completion", "created": wire.now(), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reason,
                     "logprobs": wire.chat_logprobs(logprobs) if plan.logprobs else None}],
        "usage": wire.usage(done),
    }


async def stream_chunks(stream: GenerationStream, plan: ChatPlan, model: str) -> AsyncIterator[bytes]:
    """The answer as SSE ``chat.completion.chunk`` lines, ending with ``data: [DONE]``."""
    cid, created = wire.new_id("chatcmpl"), wire.now()
    usage_field = {"usage": None} if plan.include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: list[TokenLogprob] | None = None) -> bytes:
        lp = wire.chat_logprobs(logprobs) if plan.logprobs and logprobs else None
        return wire.sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}],
                         **usage_field})

    yield chunk({"role": "assistant", "content": ""})
    filt = ToolCallStreamFilter(plan.allowed_tools) if plan.allowed_tools is not None else None
    held_logprobs: list[TokenLogprob] = []
    full: list[str] = []
    shown: list[str] = []
    sent_calls = 0
    seen_calls = 0

    def call_chunks(calls: list[ParsedCall]) -> list[bytes]:
        nonlocal sent_calls
        out = []
        for call in calls:
            if not plan.parallel_tool_calls and sent_calls >= 1:
                break
            call_json = _call_json(call, new_call_id())
            head = {"index": sent_calls, "id": call_json["id"], "type": "function",
                    "function": {"name": call.name, "arguments": ""}}
            out.append(chunk({"tool_calls": [head]}))
            out.append(chunk({"tool_calls": [{"index": sent_calls,
                                              "function": {"arguments": call_json["function"]["arguments"]}}]}))
            sent_calls += 1
        return out

    done: Finished | None = None
    async for event in stream.events():
        if isinstance(event, Failed):
            yield wire.sse_error(event.error)
            return
        if isinstance(event, Finished):
            done = event
            break
        if isinstance(event, Progress):
            p = event.progress
            # llama-server's shape (agreed with the client): no choices, prompt_progress beside them
            yield wire.sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [], "prompt_progress": {"total": p.total, "cache": p.cache,
                                                               "processed": p.processed, "time_ms": p.time_ms}})
            continue
        held_logprobs.extend(event.logprobs)
        if filt is None:
            if event.text or held_logprobs:
                yield chunk({"content": event.text}, logprobs=held_logprobs)
                held_logprobs = []
            continue
        full.append(event.text)
        text = filt.feed(event.text)
        if text:
            shown.append(text)
            yield chunk({"content": text}, logprobs=held_logprobs)
            held_logprobs = []
        new = filt.calls[seen_calls:]
        seen_calls += len(new)
        for line in call_chunks(_valid(tuple(new), True)):
            yield line
    assert done is not None
    reason = wire.finish_reason(done.finish_reason)
    if filt is not None:
        result = filt.finish()
        new = result.calls[seen_calls:]
        for line in call_chunks(_valid(tuple(new), True)):
            yield line
        rest = result.content
        if sent_calls == 0 and result.calls:
            # markup the model got wrong is not swallowed: the client sees what it wrote
            everything, out = "".join(full), "".join(shown)
            rest = everything[len(out):] if everything.startswith(out) else result.content
        if rest:
            yield chunk({"content": rest}, logprobs=held_logprobs)
        if sent_calls:
            reason = "tool_calls"
    yield chunk({}, reason)
    if plan.include_usage:
        yield wire.sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": wire.usage(done)})
    yield wire.DONE
