"""Sandbox figures: what bubblewrap adds to one shell call and one pyexe round trip.

    .venv/bin/python bench/sandbox_bench.py [--repeat 40] [--rounds 3] [--no-attacks]

Each figure is measured twice in the same run: through the sandbox (``AGENT_SANDBOX=on``) and
unconfined with the same limits, timeout and output capture (``AGENT_SANDBOX=off``, the peer),
alternating, in ``--rounds`` rounds of ``--repeat`` calls. Shown: the median and 90th percentile
milliseconds of the round with the lowest median (the least disturbed by other work on a shared
machine), the difference and the ratio.
Then the attack suite (``tests/tool/test_attacks.py``) is run and its attacks counted.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boot.settings import load_settings  # noqa: E402
from core import sandbox  # noqa: E402
from tool.pyexe import PythonSession  # noqa: E402
from tool.shell import shell_tool  # noqa: E402


def timings_ms(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # warm: imports, the bwrap probe, the first process
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def count_attacks() -> tuple[int, int, str]:
    """(tried, blocked, pytest's summary line) from the attack suite."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/tool/test_attacks.py", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    tried = sum(counts.values())
    return tried, counts.get("passed", 0), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-attacks", action="store_true", help="skip running the attack suite")
    args = parser.parse_args()
    path, reason = sandbox.bwrap_problem()
    if path is None:
        sys.exit(f"bubblewrap cannot run here: {reason}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        ws.mkdir()
        on = load_settings(workspace=str(ws), sandbox="on")
        off = load_settings(workspace=str(ws), sandbox="off")
        policy_on, policy_off = sandbox.SandboxPolicy.from_settings(on), sandbox.SandboxPolicy.from_settings(off)
        cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ("sandbox.run(['true'])", lambda: sandbox.run(["true"], policy_on), lambda: sandbox.run(["true"], policy_off)),
        ]
        shell_on, shell_off = shell_tool(on), shell_tool(off)
        cases.append(("shell tool: `true`", lambda: shell_on.fn(command="true"), lambda: shell_off.fn(command="true")))
        py_on, py_off = PythonSession(on), PythonSession(off)
        cases.append(("pyexe round trip: `1 + 1`", lambda: py_on.execute("1 + 1"), lambda: py_off.execute("1 + 1")))

        def fresh(session: PythonSession) -> Callable[[], object]:
            def go() -> object:
                session.reset()
                return session.execute("1 + 1")
            return go

        cases.append(("pyexe start + first call", fresh(py_on), fresh(py_off)))
        try:
            for name, confined, unconfined in cases:
                reps = max(5, args.repeat // 4) if "start" in name else args.repeat
                best_off: list[float] | None = None
                best_on: list[float] | None = None
                for _ in range(max(1, args.rounds)):
                    t_off = timings_ms(unconfined, reps)
                    t_on = timings_ms(confined, reps)
                    if best_off is None or statistics.median(t_off) < statistics.median(best_off):
                        best_off = t_off
                    if best_on is None or statistics.median(t_on) < statistics.median(best_on):
                        best_on = t_on
                assert best_off is not None and best_on is not None
                rows.append((name, statistics.median(best_off), p90(best_off), statistics.median(best_on), p90(best_on)))
        finally:
            py_on.close()
            py_off.close()
    print(f"bwrap: {path}")
    print(f"{'call':32} {'off med':>9} {'off p90':>9} {'on med':>9} {'on p90':>9} {'added':>8} {'ratio':>6}")
    for name, off_med, off_p90, on_med, on_p90 in rows:
        print(f"{name:32} {off_med:9.2f} {off_p90:9.2f} {on_med:9.2f} {on_p90:9.2f} {on_med - off_med:8.2f} "
              f"{on_med / off_med:6.1f}")
    print("(milliseconds; 'off' is AGENT_SANDBOX=off with the same limits, timeout and capture)")
    if not args.no_attacks:
        tried, blocked, summary = count_attacks()
        print(f"attack suite: {tried} attacks tried, {blocked} blocked ({summary})")


if __name__ == "__main__":
    main()
