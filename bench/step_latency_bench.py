"""Agent step latency on a warm server: the first step of new tasks, and a step after a tool result.

Builds the agent's real requests (``boot.wiring.build_agent``: instructions, tools, environment,
workspace view) for a few tasks, each in a workspace of its own, and sends them one after another
to a server that is already running, streaming, so the time to the first token is measured.
The first task warms the server's prefix cache; each later task should find the instructions and
the tools block there (``cached_tokens`` at least the tools block), which is what the stable
request layout is for. Prints one row per request and the size of the tools block.

    python bench/step_latency_bench.py --model-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boot.settings import load_settings  # noqa: E402
from boot.wiring import build_agent  # noqa: E402
from core.messages import Message, ToolCall  # noqa: E402
from gate.openai_compat import OpenAICompatGateway  # noqa: E402

TASKS = [
    ("pagination.py", "def paginate(items, page, size):\n    start = page * size\n    return items[start:start + size]\n",
     "paginate() in pagination.py skips the first page. Fix it."),
    ("stats.py", "def mean(xs):\n    return sum(xs) / (len(xs) - 1)\n", "mean() in stats.py is wrong. Fix it."),
    ("greet.py", "import sys\nprint('Hello', sys.argv[1])\n", "Add a --shout flag to greet.py that prints in capitals."),
    ("notes.md", "# Notes\n- ship v2\n", "What does notes.md say we should ship?"),
]


def tokens_of(url: str, text: str) -> int | None:
    import httpx

    root = url[:-3] if url.endswith("/v1") else url
    try:
        r = httpx.post(root + "/tokenize", json={"content": text}, timeout=30)
        body = r.json()
        return len(body.get("tokens") or []) or body.get("count")
    except Exception:  # noqa: BLE001 - a server without /tokenize: the row shows '-'
        return None


def timed(gateway: OpenAICompatGateway, messages: list[Message], tools: list) -> tuple[float, float, object]:
    first: list[float] = []
    start = time.monotonic()

    def on_event(event) -> None:
        if not first and event.kind in ("text", "tool_call"):
            first.append(time.monotonic() - start)

    completion = gateway.complete(messages, tools, max_tokens=64, temperature=0.0, on_event=on_event,
                                  **({"tool_choice": "required"} if gateway.constrains_calls() else {}))
    total = time.monotonic() - start
    return (first[0] if first else total), total, completion


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-url", default=os.environ.get("AGENT_MODEL_URL", "http://127.0.0.1:8000/v1"))
    args = parser.parse_args()
    gateway = OpenAICompatGateway(args.model_url, timeout_s=900)
    rows = []
    tools_tokens = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, text, task) in enumerate(TASKS):
            ws = Path(tmp) / f"ws{i}"
            ws.mkdir()
            (ws / name).write_text(text)
            agent = build_agent(load_settings(workspace=ws, model_url=args.model_url, enable_memory=False),
                                gateway=gateway)
            try:
                tools = agent._fit_tools(agent.registry.tools(task=task), task)
                if agent._constrained():
                    from flow.loop import FINAL_ANSWER
                    tools = [*tools, FINAL_ANSWER]
                if tools_tokens is None:
                    tools_tokens = tokens_of(args.model_url, json.dumps([t.spec() for t in tools]))
                messages = [*agent.system_messages(task, "bench"), Message.user(task)]
                ttft, total, completion = timed(gateway, messages, tools)
                rows.append(("step 1 of a new task", task[:40], completion.usage.prompt_tokens,
                             completion.usage.cached_tokens, ttft, total))
                # a step after a tool result: the same request plus a call and its result
                call = ToolCall("read_file", {"path": name})
                after = [*messages, Message.assistant("", (call,)), Message.tool(call.id, "read_file", text)]
                ttft, total, completion = timed(gateway, after, tools)
                rows.append(("step after a result", task[:40], completion.usage.prompt_tokens,
                             completion.usage.cached_tokens, ttft, total))
            finally:
                agent.close()
    print(f"model server {args.model_url}; tools block ≈ {tools_tokens if tools_tokens else '-'} tokens; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"| {'request':<22} | {'task':<40} | prompt | cached | TTFT s | total s |")
    print(f"| {'-' * 22} | {'-' * 40} | ------ | ------ | ------ | ------- |")
    for kind, task, prompt, cached, ttft, total in rows:
        print(f"| {kind:<22} | {task:<40} | {prompt:>6} | {cached:>6} | {ttft:>6.1f} | {total:>7.1f} |")
    new = [r for r in rows[2:] if r[0].startswith("step 1")]  # the first task only warms the cache
    if new:
        print(f"step 1 of a new task (warm): median TTFT {statistics.median(r[4] for r in new):.1f} s, "
              f"cached {min(r[3] for r in new)}-{max(r[3] for r in new)} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
