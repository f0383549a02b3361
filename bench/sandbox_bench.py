"""Sandbox figures: what bubblewrap adds to one shell call and one pyexe round trip, and the attack suite.

    .venv/bin/python bench/sandbox_bench.py [--repeat 40] [--rounds 3] [--no-attacks] [--no-timings]

Each figure is measured twice in the same run: through the sandbox (``AGENT_SANDBOX=on``) and
unconfined with the same limits, timeout and output capture (``AGENT_SANDBOX=off``, the peer),
alternating, in ``--rounds`` rounds of ``--repeat`` calls. Shown: the median and 90th percentile
milliseconds of the round with the lowest median (the least disturbed by other work on a shared
machine), the difference and the ratio.
Then every case of the attack suite (``tests/tool/attack_cases.py``) is run twice: confined (the
product) and unconfined (``AGENT_SANDBOX=off``, file tools that just ``open()`` their path, the
server's Host/Origin guard off). The table counts, per group, the attacks blocked confined, the
attacks that succeed unconfined (what shows the suite can fail), and the controls that work
confined and unconfined.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

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


def run_case(case: Any, confined: bool) -> tuple[str, Any, Any]:
    """(``"ran"`` or the reason it was skipped, the attack's Outcome, the control's Outcome)."""
    from attack_cases import Lab, Outcome

    with tempfile.TemporaryDirectory() as tmp:
        attack_lab, control_lab = Lab(Path(tmp) / "attack", confined), Lab(Path(tmp) / "control", confined)
        try:
            reason = case.needs(attack_lab)
            if reason:
                return reason, None, None
            outcomes = []
            for fn, lab in ((case.attack, attack_lab), (case.control, control_lab)):
                try:
                    outcomes.append(fn(lab))
                except Exception as exc:  # a crash of the attack or the control: it did not succeed
                    outcomes.append(Outcome(False, f"raised {type(exc).__name__}: {exc}"))
            return "ran", outcomes[0], outcomes[1]
        finally:
            attack_lab.close()
            control_lab.close()


def attack_table(verbose: bool) -> list[str]:
    """Every case confined and unconfined; the table's lines."""
    sys.path.insert(0, str(ROOT / "tests" / "tool"))
    from attack_cases import CASES

    groups: dict[str, list[int]] = {}
    skipped: list[str] = []
    for case in CASES:
        status, attack_on, control_on = run_case(case, True)
        if status != "ran":
            skipped.append(f"{case.name}: {status}")
            continue
        _, attack_off, control_off = run_case(case, False)
        row = groups.setdefault(case.item, [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += not attack_on.succeeded
        row[2] += attack_off.succeeded
        row[3] += control_on.succeeded
        row[4] += control_off.succeeded
        if verbose or attack_on.succeeded or not control_on.succeeded:
            print(f"  [{case.item}] {case.name}: confined {'SUCCEEDED' if attack_on.succeeded else 'blocked'} "
                  f"({attack_on.detail[:90]}); unconfined {'succeeded' if attack_off.succeeded else 'failed'} "
                  f"({attack_off.detail[:60]}); control {'ok' if control_on.succeeded else 'FAILED'}", flush=True)
    names = {"1": "1 protected names raced", "2": "2 workspace holds the agent", "3": "3 .git writable",
             "4": "4 process cap, /etc", "5": "5 data_view in-process", "6": "6 server Host/Origin",
             "7": "7 ripgrep on the host"}
    lines = [f"{'group':30} {'attacks':>7} {'blocked on':>10} {'succeed off':>11} {'controls on':>11} "
             f"{'controls off':>12}"]
    total = [0, 0, 0, 0, 0]
    for item in sorted(groups, key=lambda k: (not k.isdigit(), k)):
        row = groups[item]
        total = [a + b for a, b in zip(total, row)]
        lines.append(f"{names.get(item, item):30} {row[0]:7} {row[1]:10} {row[2]:11} {row[3]:11} {row[4]:12}")
    lines.append(f"{'all':30} {total[0]:7} {total[1]:10} {total[2]:11} {total[3]:11} {total[4]:12}")
    lines += [f"skipped: {s}" for s in skipped]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-attacks", action="store_true", help="skip running the attack suite")
    parser.add_argument("--no-timings", action="store_true", help="skip the timings")
    parser.add_argument("--verbose", action="store_true", help="a line per attack")
    args = parser.parse_args()
    path, reason = sandbox.bwrap_problem()
    if path is None:
        sys.exit(f"bubblewrap cannot run here: {reason}")
    print(f"bwrap: {path}; uid {os.geteuid()}; {sandbox.limits_line(sandbox.Limits())}")
    if not args.no_timings:
        timings(args)
    if not args.no_attacks:
        print("attack suite (tests/tool/attack_cases.py), each attack confined and unconfined:")
        for line in attack_table(args.verbose):
            print(line)


def timings(args: Any) -> None:
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
    print(f"{'call':32} {'off med':>9} {'off p90':>9} {'on med':>9} {'on p90':>9} {'added':>8} {'ratio':>6}")
    for name, off_med, off_p90, on_med, on_p90 in rows:
        print(f"{name:32} {off_med:9.2f} {off_p90:9.2f} {on_med:9.2f} {on_p90:9.2f} {on_med - off_med:8.2f} "
              f"{on_med / off_med:6.1f}")
    print("(milliseconds; 'off' is AGENT_SANDBOX=off with the same limits, timeout and capture)")


if __name__ == "__main__":
    main()
