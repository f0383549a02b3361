"""What the OpenAI-compatible gateway costs per call, beside the official SDK and bare httpx.

    .venv/bin/python bench/gate_overhead.py [--calls 200]

All three talk to the same stand-in server (gate/scripted_server.py, a real uvicorn on
127.0.0.1) answering a 60-word reply, streamed (in 3-character chunks, about 120 SSE events) and
not, with one tool offered. The gateway's extra work is the worker thread that makes
cancellation prompt, the stream filter that keeps tool-call markup off the screen, and the
conversion to dataclasses. A local model takes 10 ms or more per token, so the figures to compare
are per call against a model call of seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402

from core.messages import Message  # noqa: E402
from core.tools import Tool, object_schema  # noqa: E402
from gate.openai_compat import OpenAICompatGateway, messages_to_openai  # noqa: E402
from gate.scripted_server import ScriptedServer  # noqa: E402

REPLY = " ".join(["word"] * 60)
TOOL = Tool("read_file", "Read a file", object_schema({"path": {"type": "string"}}, ["path"]), lambda **k: "")
ASK = [Message.system("You are terse."), Message.user("Say sixty words.")]


def timed(fn, calls: int) -> float:
    fn()  # warm: connection, imports
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    calls = parser.parse_args().calls
    wire = messages_to_openai(ASK)
    rows = []
    with ScriptedServer([lambda body: {"text": REPLY}] * (6 * (calls + 1))) as server:
        gateway = OpenAICompatGateway(server.base_url, "m")
        sdk = openai.OpenAI(base_url=server.base_url, api_key="none")
        raw = httpx.Client()
        body = {"model": "m", "messages": wire, "tools": [TOOL.spec()]}
        for stream in (False, True):
            def via_gateway():
                gateway.complete(ASK, [TOOL], on_event=(lambda e: None) if stream else None)

            def via_sdk():
                if stream:
                    for _ in sdk.chat.completions.create(model="m", messages=wire, tools=[TOOL.spec()], stream=True,
                                                         stream_options={"include_usage": True}):
                        pass
                else:
                    sdk.chat.completions.create(model="m", messages=wire, tools=[TOOL.spec()])

            def via_httpx():
                if stream:
                    with raw.stream("POST", f"{server.base_url}/chat/completions", json={**body, "stream": True}) as r:
                        for _ in r.iter_lines():
                            pass
                else:
                    raw.post(f"{server.base_url}/chat/completions", json=body).json()

            g, s, h = timed(via_gateway, calls), timed(via_sdk, calls), timed(via_httpx, calls)
            rows.append(("streamed" if stream else "one reply", g, s, h))
    print(f"median ms per call over {calls} calls (stand-in server on 127.0.0.1)\n")
    print(f"{'mode':<10} {'gateway':>8} {'openai SDK':>11} {'httpx':>7} {'gateway/SDK':>12} {'gateway/httpx':>14}")
    for mode, g, s, h in rows:
        print(f"{mode:<10} {g:>8.2f} {s:>11.2f} {h:>7.2f} {g / s:>12.2f} {g / h:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
