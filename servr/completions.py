"""``/v1/completions``: plain prompts, and fill-in-the-middle with ``suffix`` on Qwen coder models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator

from servr.engines.base import Engine, SamplingParams
from servr.errors import bad_request, context_exceeded
from servr.generation import Failed, Finished, GenerationStream, Progress, collect
from servr.schemas import CompletionRequest
from servr import wire

FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"


@dataclass(frozen=True)
class CompletionPlan:
    prompt: list[int]
    params: SamplingParams
    stops: list[str]
    echo: str  # prompt text to send back first (``echo``), or ""
    include_usage: bool
    logprobs: bool


def fim_prompt(engine: Engine, prefix: str, suffix: str) -> list[int]:
    """Qwen coder's fill-in-the-middle layout; 400 when the model has no FIM tokens."""
    ids = [engine.special_token_id(t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)]
    if any(i is None for i in ids):
        raise bad_request(f"this model ({engine.model_id}) has no fill-in-the-middle tokens ({FIM_PREFIX}, "
                          f"{FIM_SUFFIX}, {FIM_MIDDLE}); send the request without suffix, or serve a Qwen2.5-Coder model",
                          param="suffix")
    pre, suf, mid = (int(i) for i in ids)  # type: ignore[arg-type]
    return ([pre] + engine.tokenize(prefix, parse_special=False) + [suf]
            + engine.tokenize(suffix, parse_special=False) + [mid])


def plan_completion(req: CompletionRequest, engine: Engine) -> CompletionPlan:
    """Check the request and tokenize its prompt (blocking: run it off the event loop)."""
    if req.n != 1:
        raise bad_request(f"n={req.n} is not supported: this server generates one choice per request; send n=1",
                          param="n")
    prompt_in = req.prompt
    if isinstance(prompt_in, list) and prompt_in and isinstance(prompt_in[0], str):
        if len(prompt_in) != 1:
            raise bad_request("send one prompt per request (a list of several prompts is not supported)", param="prompt")
        prompt_in = prompt_in[0]
    if isinstance(prompt_in, list):
        if any(not 0 <= t < engine.n_vocab for t in prompt_in):  # type: ignore[operator]
            raise bad_request(f"token ids must be between 0 and {engine.n_vocab - 1}", param="prompt")
        if req.suffix is not None:
            raise bad_request("suffix needs a text prompt", param="suffix")
        prompt = [int(t) for t in prompt_in]  # type: ignore[arg-type]
        text = engine.detokenize(prompt)
    else:
        text = str(prompt_in)
        prompt = fim_prompt(engine, text, req.suffix) if req.suffix is not None else engine.encode_prompt(text)
    if not prompt:
        raise bad_request("the prompt is empty", param="prompt")
    max_tokens = req.max_tokens
    if len(prompt) >= engine.n_ctx or (max_tokens is not None and len(prompt) + max_tokens > engine.n_ctx):
        raise context_exceeded(engine.n_ctx, len(prompt), max_tokens)
    params = SamplingParams(
        max_tokens=max_tokens or engine.n_ctx - len(prompt), temperature=req.temperature, top_p=req.top_p,
        seed=req.seed, presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
        top_logprobs=req.logprobs,
    )
    return CompletionPlan(prompt, params, req.stop_list(), text if req.echo else "",
                          bool(req.stream_options and req.stream_options.include_usage), req.logprobs is not None)


def _choice(text: str, finish: str | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}


async def complete(stream: GenerationStream, plan: CompletionPlan, model: str) -> dict[str, Any]:
    answer = await collect(stream)
    lp = wire.completion_logprobs(answer.logprobs, len(plan.echo)) if plan.logprobs else None
    return {"id": wire.new_id("cmpl"), "object": "text_completion", "created": wire.now(), "model": model,
            "choices": [_choice(plan.echo + answer.text, wire.finish_reason(answer.finished.finish_reason), lp)],
            "usage": wire.usage(answer.finished)}


async def stream_chunks(stream: GenerationStream, plan: CompletionPlan, model: str) -> AsyncIterator[bytes]:
    cid, created = wire.new_id("cmpl"), wire.now()
    usage_field = {"usage": None} if plan.include_usage else {}
    offset = len(plan.echo)

    def chunk(choice: dict[str, Any]) -> bytes:
        return wire.sse({"id": cid, "object": "text_completion", "created": created, "model": model,
                         "choices": [choice], **usage_field})

    if plan.echo:
        yield chunk(_choice(plan.echo, None, None))
    done: Finished | None = None
    async for event in stream.events():
        if isinstance(event, Failed):
            yield wire.sse_error(event.error)
            return
        if isinstance(event, Finished):
            done = event
            break
        if isinstance(event, Progress):  # not asked for here; a guard for the type
            continue
        lp = wire.completion_logprobs(list(event.logprobs), offset) if plan.logprobs else None
        offset += len(event.text)
        yield chunk(_choice(event.text, None, lp))
    assert done is not None
    yield chunk(_choice("", wire.finish_reason(done.finish_reason), None))
    if plan.include_usage:
        yield wire.sse({"id": cid, "object": "text_completion", "created": created, "model": model,
                        "choices": [], "usage": wire.usage(done)})
    yield wire.DONE
