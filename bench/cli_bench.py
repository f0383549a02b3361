"""Command-line figures: how long a person waits before the agent starts working.

    .venv/bin/python bench/cli_bench.py [--runs 5]

1. ``python cli.py --help`` with the venv's Python, and with a Python outside the venv (which
   re-executes itself into the venv), against a bare ``python -c pass`` (the peer: the cost of
   starting any Python at all).
2. ``python cli.py -p … --output-format json`` against a scripted server that answers at once:
   the whole start-up (settings, server check, wiring, session database) plus one model call.

Medians of ``--runs`` runs; each is a fresh process, as a person's would be.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gate.scripted_server import ScriptedServer  # noqa: E402

VENV_PY = ROOT / ".venv" / "bin" / "python"
CLI = ROOT / "cli.py"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "GEMINI_"))}
    env.pop("LOCAL_CODER_REEXEC", None)
    return env


def timed(argv: list[str], runs: int, cwd: str) -> float:
    """Median wall seconds of ``argv`` (it must exit 0)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=clean_env(),
                              stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    outside = Path(sys.base_prefix) / "bin" / "python3"
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bare = timed([str(VENV_PY), "-c", "pass"], args.runs, tmp)
        rows.append(("python -c pass (venv; the peer)", bare))
        rows.append(("cli.py --help (venv python)", timed([str(VENV_PY), str(CLI), "--help"], args.runs, tmp)))
        if outside.exists():
            rows.append(("cli.py --help (outside python, re-exec)",
                         timed([str(outside), str(CLI), "--help"], args.runs, tmp)))
        replies = [{"text": "ok"}] * args.runs
        with ScriptedServer(replies, n_ctx=8192) as server:
            rows.append(("cli.py -p TASK --output-format json (one model call)",
                         timed([str(VENV_PY), str(CLI), "-p", "say ok", "--output-format", "json",
                                "--model-url", server.base_url, "--model", server.model,
                                "--workspace", str(Path(tmp) / "ws")], args.runs, tmp)))
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  {'median ms':>10}  {'x bare python':>13}")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1000:>10.0f}  {seconds / bare:>13.1f}")


if __name__ == "__main__":
    main()
