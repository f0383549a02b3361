"""Judge figures: what deciding and checking cost on top of the work itself.

    .venv/bin/python bench/judge_bench.py [--files 20000] [--repeat 3]

1. "Did this run change files?" after a shell call: ``changed_since`` over a workspace of N files
   with nothing changed (the worst case: every entry looked at), against ``os.walk`` listing the
   same tree (the least any scan pays) and ``os.walk`` + ``lstat`` of each file (the same facts).
2. One check: ``python -m pytest -q -x`` on a small project through ``Judge.check`` (bubblewrap
   sandbox, merged output, cancel polling), against the same command run with ``subprocess.run``
   unconfined (the peer). Best of ``--repeat`` runs each.
3. What the record before a run's first change costs: the whole suite once, and a run that starts
   with nothing changed since (the record reused after a scan of the workspace).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boot.settings import Settings  # noqa: E402
from core import sandbox  # noqa: E402
from flow.judge import PYTEST_COMMAND, Judge, changed_since  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_tree(root: Path, files: int) -> None:
    per_dir = 100
    for d in range(max(1, files // per_dir)):
        folder = root / f"pkg{d // 10}" / f"mod{d}"
        folder.mkdir(parents=True)
        for f in range(per_dir):
            (folder / f"f{f}.py").write_text("x = 1\n")


def make_project(root: Path, tests: int) -> None:
    (root / "conftest.py").write_text("")
    (root / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "tests").mkdir()
    for i in range(tests):
        (root / "tests" / f"test_{i}.py").write_text(f"from calc import add\n\n\ndef test_{i}():\n    assert add({i}, 1) == {i + 1}\n")


def walk(root: Path) -> int:
    n = 0
    for _, dirs, names in os.walk(root):
        n += len(dirs) + len(names)
    return n


def walk_stat(root: Path) -> int:
    newest = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return newest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="judge-bench-") as tmp:
        tree = Path(tmp) / "tree"
        make_tree(tree, args.files)
        since = time.time() + 1.0  # a run that starts after the tree was written
        assert not changed_since(tree, since)
        ours = best(lambda: changed_since(tree, since), args.repeat)
        peer = best(lambda: walk(tree), args.repeat)
        rows.append((f"changed_since, {args.files} files, none changed", ours, peer, "os.walk, names only"))
        peer = best(lambda: walk_stat(tree), args.repeat)
        rows.append((f"changed_since, {args.files} files, none changed", ours, peer, "os.walk + lstat of each file"))

        project = Path(tmp) / "project"
        project.mkdir()
        make_project(project, 20)
        path, reason = sandbox.bwrap_problem()
        if path is None:
            print(f"(the check row is left out: {reason})")
        else:
            judge = Judge(Settings(workspace=project))
            result = judge.check(PYTEST_COMMAND)
            assert result.passed, result.output
            ours = best(lambda: judge.check(PYTEST_COMMAND), args.repeat)
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
            peer = best(lambda: subprocess.run([sys.executable, "-m", "pytest", "-q", "-x"], cwd=project, env=env,
                                               capture_output=True, check=True), args.repeat)
            rows.append(("Judge.check: pytest, 20 tests, sandboxed", ours, peer, "subprocess.run, unconfined"))

            def fresh_record() -> None:  # a new run with files changed since: the whole suite, once
                judge._known = None
                judge.run_started()
                assert judge.before_change() is not None

            def reused_record() -> None:  # a new run, nothing changed since the last record
                judge.run_started()
                assert judge.before_change() is not None

            fresh = best(fresh_record, args.repeat)
            rows.append(("checks before the change (whole suite)", fresh, ours, "Judge.check with -x, above"))
            fresh_record()
            rows.append(("checks before the change, nothing changed", best(reused_record, args.repeat), fresh,
                         "the whole suite, above"))

    print(f"{'what':<48} {'ours':>10} {'peer':>10} {'ratio':>7}  peer")
    for what, ours, peer, name in rows:
        print(f"{what:<48} {ours * 1000:>8.1f}ms {peer * 1000:>8.1f}ms {ours / peer:>6.2f}x  {name}")


if __name__ == "__main__":
    main()
