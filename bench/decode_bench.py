"""Decode speed on code edits: plain decoding vs prompt lookup vs llama.cpp's own llama-server.

    .venv/bin/python bench/decode_bench.py [--model PATH] [--threads N] [--only rename,novel]
    .venv/bin/python bench/decode_bench.py --compare-threads 1,2     # AGENT_THREADS advice

Five chat workloads, rendered once with the model's template and sent as the same prompt tokens
to every engine, one run each (issue 13), greedy but for ``novel``:
- ``rename``: rewrite a 150-line file with one function renamed everywhere;
- ``edit_call``: an ``edit_file`` tool call whose ``old_string`` quotes 30 lines of the file (the
  answer starts with the call's opening and the first quoted line: left alone, the 0.5B writes
  the word ``old_string`` as its value);
- ``fix_line``: fix one wrong line and return the whole function;
- ``docstrings``: add a one-line docstring to each function of a file;
- ``novel``: a short story, sampled at temperature 0.8 with a seed (greedy, the 0.5B repeats one
  sentence, which lookup would copy): nothing to copy, so lookup must not slow it down, and with
  the same seed it must give the very same text.

Engines: this repository's llama.cpp engine in this process with prompt lookup off (``plain``) and
on (``lookup``), and ``llama-server`` built from the llama.cpp sources vendored in the installed
llama-cpp-python's sdist (built into ~/.cache/local-coder/llama-server-src when missing, ~10
minutes on 2 cores), with the same threads, context, flash attention and weight layout. Decode
tokens/s is counted from the first generated token to the last (prompt processing excluded): for
ours by the clock around the engine, for llama-server from its own ``timings`` (no HTTP in it).
Text is compared: lookup against plain (must be identical, also sampled with a seed), llama-server
against plain (greedy only: its sampler draws other random numbers).
The machine's load (``os.getloadavg``) is printed before and after: on a shared machine the
figures only compare engines measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from servr.chat_template import ChatRenderer  # noqa: E402
from servr.engines.base import SamplingParams  # noqa: E402
from servr.engines.cpu import physical_cores  # noqa: E402
from servr.engines.llama_cpp import LlamaCppEngine, cpu_has_amx  # noqa: E402

SRC_CACHE = Path.home() / ".cache" / "local-coder" / "llama-server-src"
DEFAULT_MODEL = Path.home() / ".cache" / "local-coder" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


# --- workloads -----------------------------------------------------------------------------------
def _inventory_module() -> str:
    """A 150-line module in which ``parse_record`` is defined and used in several places."""
    lines = ['"""Inventory records: parsing, validation and reports."""', "", "import csv", "import json",
             "from dataclasses import dataclass", "from pathlib import Path", "", "",
             "@dataclass", "class Record:", "    sku: str", "    name: str", "    quantity: int", "    price: float", "", "",
             "def parse_record(row: dict) -> Record:",
             "    sku = row[\"sku\"].strip().upper()", "    name = row[\"name\"].strip()",
             "    quantity = int(row.get(\"quantity\", 0))", "    price = float(row.get(\"price\", 0.0))",
             "    return Record(sku, name, quantity, price)", "", ""]
    topics = ["stock", "prices", "names", "warehouse", "orders", "returns", "suppliers", "audit", "labels", "totals",
              "alerts", "exports", "imports", "restock"]
    for i, topic in enumerate(topics):
        lines += [f"def load_{topic}(path: Path) -> list[Record]:",
                  f"    with open(path, newline=\"\") as handle:",
                  f"        rows = [parse_record(row) for row in csv.DictReader(handle)]",
                  f"    return [r for r in rows if r.quantity >= {i}]", "", "",
                  f"def report_{topic}(records: list[Record]) -> str:",
                  f"    total = sum(r.quantity * r.price for r in records)",
                  f"    return json.dumps({{\"{topic}\": len(records), \"value\": round(total, 2)}})", ""]
        if len(lines) >= 146:
            break
    lines = lines[:148] + ["", "if __name__ == \"__main__\":  # a quick check", "    print(parse_record({\"sku\": \"a1\", \"name\": \"x\"}))"]
    return "\n".join(lines[:150]) + "\n"


def _http_module() -> str:
    return "\n".join([
        "import time", "import urllib.request", "", "",
        "def fetch_with_retries(url, attempts=3, timeout=10, backoff=0.5):",
        "    \"\"\"Fetch a URL, retrying on failure.\"\"\"",
        "    last_error = None",
        "    for attempt in range(attempts):",
        "        try:",
        "            with urllib.request.urlopen(url, timeout=timeout) as response:",
        "                status = response.status",
        "                if status >= 500:",
        "                    raise RuntimeError(f\"server error {status}\")",
        "                body = response.read()",
        "                if not body:",
        "                    raise RuntimeError(\"empty body\")",
        "                return body.decode(\"utf-8\", errors=\"replace\")",
        "        except Exception as exc:",
        "            last_error = exc",
        "            delay = backoff * (2 ** attempt)",
        "            time.sleep(delay)",
        "    raise RuntimeError(f\"giving up on {url}\") from last_error",
        "", "",
        "def fetch_all(urls, attempts=3, timeout=10):",
        "    results = {}",
        "    for url in urls:",
        "        try:",
        "            results[url] = fetch_with_retries(url, attempts=attempts, timeout=timeout)",
        "        except RuntimeError as exc:",
        "            results[url] = None",
        "            print(f\"failed: {url}: {exc}\")",
        "    return results",
        "", "",
        "def summarize(results):",
        "    ok = sum(1 for body in results.values() if body is not None)",
        "    return f\"{ok} of {len(results)} fetched\"",
    ]) + "\n"


BUGGY = '''def moving_average(values, window):
    """Average of each run of `window` consecutive values."""
    if window <= 0:
        raise ValueError("window must be positive")
    if window > len(values):
        return []
    averages = []
    total = sum(values[:window])
    averages.append(total / window)
    for i in range(window, len(values) - 1):
        total += values[i] - values[i - window]
        averages.append(total / window)
    return averages
'''

GEOMETRY = '''import math


def area_of_circle(radius):
    return math.pi * radius ** 2


def circumference(radius):
    return 2 * math.pi * radius


def distance(a, b):
    return math.hypot(b[0] - a[0], b[1] - a[1])


def midpoint(a, b):
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


def polygon_perimeter(points):
    return sum(distance(points[i], points[(i + 1) % len(points)]) for i in range(len(points)))


def triangle_area(a, b, c):
    return abs((b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])) / 2


def scale_point(point, factor):
    return (point[0] * factor, point[1] * factor)
'''

EDIT_TOOL = {"type": "function", "function": {
    "name": "edit_file", "description": "Replace the exact text old_string with new_string in a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "old_string": {"type": "string"},
                                                    "new_string": {"type": "string"}},
                   "required": ["path", "old_string", "new_string"]}}}


@dataclass(frozen=True)
class Workload:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    max_tokens: int
    answer_start: str = ""  # text the answer begins with (appended to the rendered prompt)
    temperature: float = 0.0
    seed: int | None = None


def workloads() -> dict[str, Workload]:
    """The five workloads, by name."""
    module = _inventory_module()
    assert module.count("\n") == 150
    http = _http_module()
    body = "\n".join(http.splitlines()[4:34])  # the 30 lines of fetch_with_retries and a bit after
    return {
        "rename": Workload([{"role": "user", "content": "Here is inventory.py:\n\n```python\n" + module + "```\n\n"
                             "Rename the function parse_record to parse_row everywhere in the file. Reply with the "
                             "complete updated file in one ```python block and nothing else."}], None, 1600),
        # Qwen2.5-0.5B calls edit_file with "old_string" as the value when left to itself: the answer is
        # started for it, with the first quoted line
        "edit_call": Workload([{"role": "user", "content": "This is net.py:\n\n```python\n" + http + "```\n\nCall "
                                "edit_file on net.py to change the default timeout of fetch_with_retries from 10 to "
                                "30. old_string must be these 30 lines exactly as they are in the file, and new_string "
                                "the same 30 lines with the one change:\n\n" + body}], [EDIT_TOOL], 900,
                               answer_start='<tool_call>\n{"name": "edit_file", "arguments": {"path": "net.py", '
                                            '"old_string": "def fetch_with_retries(url, attempts=3, timeout=10, '
                                            'backoff=0.5):\\n'),
        "fix_line": Workload([{"role": "user", "content": "This function skips the last window:\n\n```python\n"
                               + BUGGY + "```\n\nFix the one wrong line and reply with the whole corrected function in "
                               "a ```python block, nothing else."}], None, 300),
        "docstrings": Workload([{"role": "user", "content": "Add a one-line docstring to every function in geometry.py "
                                 "and reply with the whole file in one ```python block, nothing else.\n\n```python\n"
                                 + GEOMETRY + "```"}], None, 700),
        # greedy, Qwen2.5-0.5B repeats one sentence over and over in a story (which lookup would copy);
        # sampled with a seed it writes new text, and lookup must still give the very same text
        "novel": Workload([{"role": "user", "content": "Write a short story (about 300 words) about a lighthouse "
                            "keeper who finds a message in a bottle."}], None, 400, temperature=0.8, seed=1),
    }


# --- llama-server --------------------------------------------------------------------------------
def llama_server_binary(log: Any = print) -> Path:
    """llama-server built from the sdist of the installed llama-cpp-python; built once when missing."""
    version = importlib.metadata.version("llama_cpp_python")
    src = SRC_CACHE / f"llama_cpp_python-{version}"
    binary = src / "build" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    SRC_CACHE.mkdir(parents=True, exist_ok=True)
    sdist = SRC_CACHE / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        log(f"downloading the llama-cpp-python {version} sdist (its vendored llama.cpp builds llama-server)")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d",
                        str(SRC_CACHE), f"llama-cpp-python=={version}"], check=True)
    if not src.is_dir():
        with tarfile.open(sdist) as tar:
            tar.extractall(SRC_CACHE, filter="data")
    log("building llama-server (about 10 minutes on 2 cores)")
    subprocess.run(["cmake", "-B", "build", "vendor/llama.cpp", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON",
                    "-DLLAMA_BUILD_TESTS=OFF", "-DCMAKE_BUILD_TYPE=Release"], cwd=src, check=True)
    subprocess.run(["cmake", "--build", "build", "--target", "llama-server", f"-j{os.cpu_count() or 2}"], cwd=src,
                   check=True)
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    def __init__(self, binary: Path, model: Path, threads: int, ctx: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(binary), "-m", str(model), "-t", str(threads), "-tb", str(threads), "-c", str(ctx), "-np", "1",
                "--flash-attn", "on", "--host", "127.0.0.1", "--port", str(self.port), "--no-webui"]
        if cpu_has_amx():  # the same weight layout as our engine there (see servr/engines/llama_cpp.py)
            args.append("--no-repack")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}: {' '.join(args)}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("llama-server did not become ready in 300 s")

    def complete(self, prompt: list[int], max_tokens: int, temperature: float = 0.0,
                 seed: int | None = None) -> tuple[str, int, float]:
        """(text, tokens generated, decode tokens/s by llama-server's own timings)."""
        body = {"prompt": prompt, "n_predict": max_tokens, "temperature": temperature, "cache_prompt": False,
                "stream": False}
        if temperature > 0:  # the same distribution as ours: no top-k / min-p
            body.update({"top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": seed if seed is not None else -1})
        r = httpx.post(self.url + "/completion", json=body, timeout=3600)
        r.raise_for_status()
        body = r.json()
        timings = body["timings"]
        return body["content"], int(timings["predicted_n"]), float(timings["predicted_per_second"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- our engine ----------------------------------------------------------------------------------
def ours(engine: LlamaCppEngine, prompt: list[int], max_tokens: int, lookup: bool, temperature: float = 0.0,
         seed: int | None = None) -> tuple[str, int, float, Any]:
    """(text, tokens generated, decode tokens/s, the Generation)."""
    engine.prompt_lookup = lookup
    engine._llm.reset()  # no run reuses another's KV cache (llama-server gets cache_prompt false)
    gen = engine.generate(prompt, SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed),
                          threading.Event())
    first = None
    pieces = []
    for step in gen.steps:
        if first is None:
            first = time.perf_counter()
        pieces.append(step.text)
    end = time.perf_counter()
    n = gen.completion_tokens
    rate = (n - 1) / (end - first) if first is not None and n > 1 and end > first else 0.0
    return "".join(pieces), n, rate, gen


def compare_threads(model: Path, counts: list[int], ctx: int) -> None:
    """Prompt processing and plain decode tokens/s at each thread count, rounds interleaved."""
    engines = {n: LlamaCppEngine(model, model_id="bench", n_ctx=ctx, n_threads=n, prompt_lookup=False) for n in counts}
    first = engines[counts[0]]
    w = workloads()["rename"]
    prompt = first.encode_prompt(ChatRenderer(first.chat_template()).render(w.messages, w.tools))
    results: dict[int, list[tuple[float, float]]] = {n: [] for n in counts}
    try:
        for _ in range(2):
            for n, engine in engines.items():
                engine._llm.reset()
                started = time.perf_counter()
                list(engine.generate(prompt, SamplingParams(max_tokens=1, temperature=0.0), threading.Event()).steps)
                prefill = len(prompt) / (time.perf_counter() - started)
                _, _, decode, _ = ours(engine, prompt[:200], 100, False)
                results[n].append((prefill, decode))
    finally:
        for engine in engines.values():
            engine.close()
    load = os.getloadavg()
    print(f"threads compared on {model.name}, prompt {len(prompt)} tokens, 100 decoded; load average after "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| threads | prompt t/s (2 rounds) | decode t/s (2 rounds) |\n| ---: | --- | --- |")
    for n, runs in results.items():
        print(f"| {n} | {' / '.join(f'{p:.1f}' for p, _ in runs)} | {' / '.join(f'{d:.1f}' for _, d in runs)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--only", default="", help="comma-separated workloads (default: all)")
    ap.add_argument("--no-llama-server", action="store_true", help="skip the peer (no build)")
    ap.add_argument("--compare-threads", default="", metavar="1,2",
                    help="instead: prompt and decode tokens/s of plain decoding at these thread counts")
    args = ap.parse_args()
    if not args.model.is_file():
        sys.exit(f"model not found: {args.model} (python -m model.pypi_weights qwen2.5-coder-0.5b fetches it)")
    if args.compare_threads:
        compare_threads(args.model, [int(n) for n in args.compare_threads.split(",")], args.ctx)
        return
    chosen = workloads()
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    load_before = os.getloadavg()
    print(f"model {args.model.name}, threads {args.threads}, ctx {args.ctx}, "
          f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    engine = LlamaCppEngine(args.model, model_id="bench", n_ctx=args.ctx, n_threads=args.threads)
    renderer = ChatRenderer(engine.chat_template())
    prompts = {name: engine.encode_prompt(renderer.render(w.messages, w.tools) + w.answer_start)
               for name, w in chosen.items()}
    server = None if args.no_llama_server else LlamaServer(llama_server_binary(), args.model, args.threads, args.ctx)
    rows = []
    try:
        ours(engine, prompts[next(iter(prompts))][:64], 8, False)  # warm-up: pages in the weights
        if server is not None:
            server.complete(prompts[next(iter(prompts))][:64], 8)
        for name, w in chosen.items():
            prompt = prompts[name]
            plain_text, plain_n, plain_rate, _ = ours(engine, prompt, w.max_tokens, False, w.temperature, w.seed)
            fast_text, fast_n, fast_rate, gen = ours(engine, prompt, w.max_tokens, True, w.temperature, w.seed)
            peer = server.complete(prompt, w.max_tokens, w.temperature, w.seed) if server is not None else None
            rows.append((name, len(prompt), plain_n, plain_rate, fast_n, fast_rate, gen.accepted, gen.drafted,
                         fast_text == plain_text, peer, peer is not None and peer[0] == plain_text))
            print(f"  {name}: plain {plain_rate:.1f} t/s, lookup {fast_rate:.1f} t/s"
                  + (f", llama-server {peer[2]:.1f} t/s" if peer else ""), flush=True)
    finally:
        if server is not None:
            server.stop()
        engine.close()
    load_after = os.getloadavg()
    print()
    print("| workload | prompt | tokens | plain t/s | lookup t/s | llama-server t/s | lookup / plain | "
          "lookup / llama-server | accepted / drafted | text lookup = plain | llama-server = plain |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for name, n_prompt, plain_n, plain_rate, fast_n, fast_rate, acc, drafted, same, peer, peer_same in rows:
        peer_rate = f"{peer[2]:.1f}" if peer else "—"
        vs_peer = f"{fast_rate / peer[2]:.2f}×" if peer and peer[2] > 0 else "—"
        print(f"| {name} | {n_prompt} | {fast_n} | {plain_rate:.1f} | {fast_rate:.1f} | {peer_rate} | "
              f"{fast_rate / plain_rate:.2f}× | {vs_peer} | {acc} / {drafted} | {'yes' if same else 'NO'} | "
              f"{('yes' if peer_same else 'no') if peer else '—'} |")
    print(f"\nload average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
          f"{os.cpu_count()} CPUs, {physical_cores()} physical cores")


if __name__ == "__main__":
    main()
