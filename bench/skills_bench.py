"""Skill figures: one sandboxed skill call, and the hot-reload scan with many skills present.

    .venv/bin/python bench/skills_bench.py [--skills 200] [--calls 30] [--scans 200]

A call is the whole path the model's call takes (``Tool.fn``: sandbox start, interpreter start,
the runner checks and loads the skill, the call, JSON back), against two peers measured in the
same run: ``sandbox.run(["true"])`` (the sandbox alone) and ``python -I -c pass`` in the sandbox
(the sandbox and an interpreter). The scan is ``SkillLoader.tools()`` before a model call with
``--skills`` valid skill files unchanged, against ``os.scandir`` + ``lstat`` of the same folder;
the first (cold) scan validates every file. Medians and 90th percentiles in milliseconds.
Targets: a call under 150 ms, a scan under 20 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boot.settings import Settings  # noqa: E402
from core import sandbox  # noqa: E402
from tool.skills import SkillLoader, SkillRunner  # noqa: E402

SKILL = '''"""Skill {i} of the benchmark."""
import re

WORD = re.compile(r"\\w+")


def skill_{i:03d}(text: str, top: int = 3) -> dict[str, int]:
    """Count the {i}th most common words of a text.

    Args:
        text: the text to count
        top: how many words to return
    """
    counts: dict[str, int] = {{}}
    for word in WORD.findall(text.lower()):
        counts[word] = counts.get(word, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])
'''


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, 90th percentile) in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.9))]


def rank(settings: Settings) -> list[tuple[str, str]]:
    """Rows for choosing 8 of the skills by meaning with the bundled MiniLM (none when it is missing)."""
    from core.errors import ModelNotFound
    from store.embed import SentenceTransformerEmbedder, default_model_path

    try:
        default_model_path()
    except ModelNotFound:
        return [("relevance (bundled MiniLM not installed)", "-")]
    loader = SkillLoader(settings, embedder=SentenceTransformerEmbedder, on_notice=lambda m: None,
                         embed_in_background=False)
    loader.scan()
    start = time.perf_counter()
    loader.tools_for("count the words of this text")
    first = (time.perf_counter() - start) * 1000
    tasks = iter([f"task number {i}: find the most common words" for i in range(1000)])
    new_task = timed(lambda: loader.tools_for(next(tasks)), 20)
    same_task = timed(lambda: loader.tools_for("task number 3: find the most common words"), 50)
    n = len(loader.scan())
    return [(f"relevance, first task: load MiniLM + embed {n} descriptions", f"{first:.0f} (once, in a "
             "background thread in the agent)"),
            ("relevance, a new task (embeds the task only)", f"{new_task[0]:.1f} / {new_task[1]:.1f}"),
            ("relevance, later steps of the same task", f"{same_task[0]:.2f} / {same_task[1]:.2f}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skills", type=int, default=200)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--scans", type=int, default=200)
    args = parser.parse_args()
    path, reason = sandbox.bwrap_problem()
    if path is None:
        raise SystemExit(f"bubblewrap cannot run here: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        (root / "skills").mkdir(parents=True)
        for i in range(args.skills):
            (root / "skills" / f"skill_{i:03d}.py").write_text(SKILL.format(i=i))
        settings = Settings(workspace=root)
        loader = SkillLoader(settings, embedder=None, runner=SkillRunner(settings), on_notice=lambda m: None)
        start = time.perf_counter()
        loaded = loader.scan()
        cold = (time.perf_counter() - start) * 1000
        assert all(s.ok for s in loaded), [s.problem for s in loaded if not s.ok][:3]
        scan = timed(loader.tools, args.scans)
        folder = root / "skills"

        def bare() -> None:
            for entry in os.scandir(folder):
                entry.stat(follow_symlinks=False)

        peer_scan = timed(bare, args.scans)
        changed = folder / "skill_007.py"

        def one_changed() -> None:
            changed.write_text(SKILL.format(i=7) + "\n")
            loader.scan()

        rescan = timed(one_changed, 20)
        tool = next(s.tool for s in loaded if s.name == "skill_000")
        assert tool is not None
        value = tool.fn(text="a b a c a b", top=2).content
        assert value == '{"a": 3, "b": 2}', value
        call = timed(lambda: tool.fn(text="the cat and the hat", top=2), args.calls)
        ranking = rank(settings)
        policy = sandbox.SandboxPolicy.from_settings(settings)
        true = timed(lambda: sandbox.run(["true"], policy), args.calls)
        python = timed(lambda: sandbox.run([sys.executable, "-I", "-c", "pass"], policy), args.calls)
    load = os.getloadavg()[0]
    print(f"skills bench: {args.skills} skills, {args.calls} calls, {args.scans} scans; load average {load:.1f}\n")
    print("| figure | median / p90 (ms) | peer in the same run | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| one skill call (sandbox + interpreter + load + call + JSON) | {call[0]:.1f} / {call[1]:.1f} | "
          f"`sandbox.run(['true'])` {true[0]:.1f} / {true[1]:.1f}; `python -I -c pass` sandboxed "
          f"{python[0]:.1f} / {python[1]:.1f} | ×{call[0] / true[0]:.1f}; ×{call[0] / python[0]:.2f} |")
    print(f"| scan before a model call, {args.skills} skills unchanged (`tools()`) | {scan[0]:.2f} / {scan[1]:.2f} | "
          f"`scandir` + `lstat` {peer_scan[0]:.2f} / {peer_scan[1]:.2f} | ×{scan[0] / peer_scan[0]:.1f} |")
    print(f"| scan with one skill changed (re-validated) | {rescan[0]:.2f} / {rescan[1]:.2f} | | |")
    print(f"| first scan, {args.skills} skills validated | {cold:.0f} (once) | | |")
    for label, figure in ranking:
        print(f"| {label} | {figure} | | |")
    verdict_call = "meets" if call[0] < 150 else "misses"
    verdict_scan = "meets" if scan[0] < 20 else "misses"
    print(f"\ncall {verdict_call} the 150 ms target; scan {verdict_scan} the 20 ms target")


if __name__ == "__main__":
    main()
