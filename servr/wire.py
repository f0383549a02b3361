"""Small pieces of the OpenAI wire format shared by the routes: ids, usage, SSE lines, logprobs."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from servr.engines.base import TokenLogprob
from servr.errors import APIError
from servr.generation import Finished

DONE = b"data: [DONE]\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(done: Finished) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


def sse_error(error: APIError) -> bytes:
    return sse(error.body())


def finish_reason(reason: str) -> str:
    # a cancelled generation only reaches a client that is still there when the server stops
    return "stop" if reason == "cancelled" else reason


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**entry(lp.token, lp.logprob), "top_logprobs": [entry(t, p) for t, p in lp.top]}
                        for lp in items]}


def completion_logprobs(items: list[TokenLogprob], start_offset: int) -> dict[str, Any]:
    offsets, pos = [], start_offset
    for lp in items:
        offsets.append(pos)
        pos += len(lp.token)
    return {
        "tokens": [lp.token for lp in items],
        "token_logprobs": [lp.logprob for lp in items],
        "top_logprobs": [{t: p for t, p in lp.top} for lp in items],
        "text_offset": offsets,
    }
