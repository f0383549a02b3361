"""Agent loop figures: everything but the model.

    .venv/bin/python bench/loop_bench.py [--steps 200] [--messages 500]

1. Loop overhead per step: the real loop (session writes to SQLite, context budget, registry
   validation, worker-thread tool call, events) with an instant scripted model, against a bare
   loop that only calls the same model and tool (the peer).
2. Building one request from a 500-message session under a 4k-token context: cold (first step
   after loading) and warm (later steps, counts cached), against ``json.dumps`` of the same
   messages in OpenAI shape, which every client pays per request anyway.
3. Peak Python memory of loading and building from that session (tracemalloc), against the size
   of its text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boot.settings import Settings  # noqa: E402
from core.messages import Message, ToolCall  # noqa: E402
from core.tools import Tool, object_schema  # noqa: E402
from flow.context import ContextBudget, reply_budget  # noqa: E402
from flow.loop import Agent  # noqa: E402
from gate.scripted import ScriptedGateway  # noqa: E402
from store.sessions import SessionStore  # noqa: E402
from tool.registry import ToolRegistry  # noqa: E402


def echo_tool() -> Tool:
    return Tool("read_file", "Read a file.", object_schema({"path": {"type": "string"}, "start_line": {"type": "integer"}},
                                                         ["path"]),
                lambda path, start_line=1: f"contents of {path}\n" + "x = 1\n" * 40, read_only=True)


def script(steps: int) -> list:
    """A model that reads ``steps`` files then answers; compaction requests (no tools) get a summary."""
    done = [0]

    def model(messages, tools):
        if not tools:
            return "Task: read all modules. Files touched: none. Open items: keep reading."
        done[0] += 1
        if done[0] > steps:
            return "Done."
        return ["Reading the next file.", ToolCall("read_file", {"path": f"src/m{done[0]}.py"})]

    return [model] * (steps * 2 + 1)


def loop_overhead(steps: int, ctx: int) -> tuple[float, float]:
    """(ms per step of the real loop, ms per step of the bare loop)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(workspace=Path(tmp), enable_files=False, max_steps=steps + 5, max_reply_tokens=1024,
                            max_tokens_total=10**9)
        gateway = ScriptedGateway(script(steps), context=ctx)
        registry = ToolRegistry()
        registry.register(echo_tool())
        store = SessionStore.for_workspace(tmp)
        agent = Agent(gateway, registry, store, settings)
        start = time.perf_counter()
        result = agent.run("read all the modules")
        real = (time.perf_counter() - start) / result.steps
        assert result.status == "done", result.reason
        store.close()

    # the peer: the same model and tool with nothing around them
    gateway = ScriptedGateway(script(steps), context=ctx)
    tool = echo_tool()
    messages = [Message.system("sys"), Message.user("read all the modules")]
    start = time.perf_counter()
    n = 0
    while True:
        n += 1
        completion = gateway.complete(messages, [tool])
        messages.append(completion.message)
        if not completion.tool_calls:
            break
        for call in completion.tool_calls:
            messages.append(Message.tool(call.id, call.name, tool.fn(**call.arguments)))
    bare = (time.perf_counter() - start) / n
    return real * 1000, bare * 1000


def build_session(store: SessionStore, messages: int) -> str:
    sid = store.create(title="a long session")
    store.append(sid, Message.user("Refactor the package and keep the tests green."))
    for i in range((messages - 1) // 2):
        call = ToolCall("read_file", {"path": f"src/module_{i}.py"})
        store.append(sid, Message.assistant(f"Looking at module {i}.", [call]))
        store.append(sid, Message.tool(call.id, "read_file", f"# module {i}\n" + "def f(x):\n    return x + 1\n" * 50))
    if messages % 2 == 0:
        store.append(sid, Message.assistant("Halfway there."))
    return sid


def request_cost(messages: int, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(Path(tmp) / "s.db")
        sid = build_session(store, messages)
        gateway = ScriptedGateway([], context=4096)
        tools = [echo_tool()]
        system = Message.system("You are a coding agent." * 5)

        tracemalloc.start()
        history = store.load(sid)
        budget = ContextBudget(gateway, context_length=4096, reply_tokens=reply_budget(4096, 2048))
        request = budget.build(system, history, tools, task_seq=history[0].seq)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        text_bytes = sum(len(r.message.content.encode()) for r in history)

        cold, warm, load, dumps = [], [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            history = store.load(sid)
            t1 = time.perf_counter()
            budget = ContextBudget(gateway, context_length=4096, reply_tokens=reply_budget(4096, 2048))
            budget.build(system, history, tools, task_seq=history[0].seq)
            t2 = time.perf_counter()
            budget.build(system, history, tools, task_seq=history[0].seq)
            t3 = time.perf_counter()
            json.dumps([_wire(m.message) for m in history])
            t4 = time.perf_counter()
            load.append(t1 - t0)
            cold.append(t2 - t1)
            warm.append(t3 - t2)
            dumps.append(t4 - t3)
        store.close()
    return {
        "messages": len(history), "kept": len(request.messages), "dropped": len(request.dropped),
        "load_ms": statistics.median(load) * 1000, "cold_ms": statistics.median(cold) * 1000,
        "warm_ms": statistics.median(warm) * 1000, "dumps_ms": statistics.median(dumps) * 1000,
        "peak_mb": peak / 2**20, "text_mb": text_bytes / 2**20,
    }


def _wire(m: Message) -> dict:
    out: dict = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments))}}
                             for c in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    threading.current_thread().name = "bench"

    print(f"Agent loop, {args.steps} steps with an instant scripted model, best of 3 (python {sys.version.split()[0]})")
    print(f"{'case':<44}{'loop ms/step':>14}{'bare ms/step':>14}{'ratio':>8}")
    for ctx, label in ((32768, "32k context (no compaction)"), (4096, "4k context (stubs, drops, compaction)")):
        # best of 3: the cores are shared, and the least disturbed run is the overhead itself
        runs = [loop_overhead(args.steps, ctx) for _ in range(3)]
        real, bare = min(r[0] for r in runs), min(r[1] for r in runs)
        print(f"{label:<44}{real:>14.2f}{bare:>14.3f}{real / bare:>8.1f}")

    r = request_cost(args.messages, args.repeats)
    print()
    print(f"Request from a {r['messages']}-message session under a 4k context "
          f"(kept {r['kept']} messages, {r['dropped']} left for compaction)")
    print(f"{'what':<44}{'ms':>10}{'vs json.dumps':>15}")
    for key, label in (("load_ms", "load from SQLite (with repair check)"), ("cold_ms", "build, first step (cold counts)"),
                       ("warm_ms", "build, later steps (cached counts)"), ("dumps_ms", "peer: json.dumps of all messages")):
        print(f"{label:<44}{r[key]:>10.2f}{r[key] / r['dumps_ms']:>15.1f}")
    print()
    print(f"Peak Python memory loading and building it: {r['peak_mb']:.2f} MiB "
          f"(message text {r['text_mb']:.2f} MiB, ratio {r['peak_mb'] / r['text_mb']:.1f})")


if __name__ == "__main__":
    main()
