"""Prefix KV reuse across interleaved sessions (llama.cpp's saved-state LRU), on the real SmolLM2 GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest

from servr_helpers import live_server, settings

pytestmark = pytest.mark.slow

SMOL = "smollm2-135m-instruct-q4_1"


def _system(name: str, job: str) -> dict[str, str]:
    rules = " ".join(f"Rule {i}: every {job} numbered {i} goes in ledger {name}-{i}." for i in range(25))
    return {"role": "system", "content": f"You are {name}, the assistant of the {job} office. {rules}"}


A = [_system("Ada", "ship"), {"role": "user", "content": "Which ledger holds ship 7?"}]
B = [_system("Bob", "train"), {"role": "user", "content": "Which ledger holds train 3?"}]


@pytest.fixture(scope="module")
def urls(smollm2_path: Path) -> Iterator[dict[str, str]]:
    """Two servers on the same file: with the state LRU (the default) and without it."""
    from servr.app import create_app
    from servr.engines.llama_cpp import LlamaCppEngine

    engines = {"lru": LlamaCppEngine(smollm2_path, model_id=SMOL, n_ctx=2048),
               "plain": LlamaCppEngine(smollm2_path, model_id=SMOL, n_ctx=2048, state_cache_bytes=0)}
    try:
        with live_server(create_app(settings(), engines["lru"])) as lru, \
                live_server(create_app(settings(), engines["plain"])) as plain:
            yield {"lru": lru, "plain": plain}
    finally:
        for engine in engines.values():
            engine.close()


def _conversation(url: str) -> list:
    """Session A turn 1, session B turn 1, session A turn 2, greedy; the three answers."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)

    def ask(messages: list) -> object:
        return client.chat.completions.create(model=SMOL, messages=messages, max_tokens=12, temperature=0)

    a1 = ask(A)
    b1 = ask(B)
    a2 = ask(A + [{"role": "assistant", "content": a1.choices[0].message.content},
                  {"role": "user", "content": "And ship 9?"}])
    return [a1, b1, a2]


def _cached_counter(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("servr_prompt_tokens_cached_total "):
            return float(line.split()[-1])
    raise AssertionError("no cached-token counter in /metrics")


def test_interleaved_session_gets_its_prefix_back_with_the_same_greedy_answer(urls: dict[str, str]) -> None:
    a1, b1, a2 = _conversation(urls["lru"])
    plain = _conversation(urls["plain"])
    assert a1.usage.prompt_tokens > 300  # above the size from which a state is worth keeping
    # A's whole turn 1 (prompt and answer) comes back from the saved state
    assert a2.usage.prompt_tokens_details.cached_tokens >= a1.usage.prompt_tokens
    assert a2.usage.prompt_tokens_details.cached_tokens < a2.usage.prompt_tokens
    # without the LRU, B's turn overwrote it: only the template's first tokens are shared
    assert plain[2].usage.prompt_tokens_details.cached_tokens < 10
    assert [r.choices[0].message.content for r in (a1, b1, a2)] == [r.choices[0].message.content for r in plain]
    # /metrics counts what usage reported
    assert _cached_counter(urls["lru"]) == sum(r.usage.prompt_tokens_details.cached_tokens for r in (a1, b1, a2))
    states = httpx.get(urls["lru"] + "/health").json()["prefix_states"]
    assert states["restores"] == 1 and states["max_bytes"] == 2 << 30
    assert httpx.get(urls["plain"] + "/health").json()["prefix_states"]["saves"] == 0


def test_saved_states_stay_under_the_byte_cap_least_recently_used_dropped_first(smollm2_path: Path) -> None:
    import threading

    from servr.engines.base import SamplingParams
    from servr.engines.llama_cpp import LlamaCppEngine

    def prompt(word: str) -> list[int]:
        return engine.encode_prompt(f"{word}: " + " ".join(f"{word} item {i} is kept." for i in range(60)))

    def run(tokens: list[int]) -> int:
        gen = engine.generate(tokens, SamplingParams(max_tokens=2, temperature=0), threading.Event())
        list(gen.steps)
        return gen.cached_tokens

    # one ~400-token SmolLM2 state is ~9 MB (23 KB a token): room for one, not two
    engine = LlamaCppEngine(smollm2_path, model_id=SMOL, n_ctx=2048, state_cache_bytes=12 << 20, state_min_tokens=64)
    try:
        a, b, c = prompt("apple"), prompt("brick"), prompt("cloud")
        assert len(a) > 300
        for tokens in (a, b, c):  # a is saved when b comes, b when c comes, pushing a out
            run(tokens)
        states = engine.describe()["prefix_states"]
        assert (states["entries"], states["saves"]) == (1, 2) and 0 < states["bytes"] <= 12 << 20
        assert run(a) < 10  # dropped: evaluated again; c is saved and pushes b out
        assert run(c) >= len(c) - 1  # kept: restored
        assert engine.describe()["prefix_states"]["restores"] == 1
    finally:
        engine.close()
