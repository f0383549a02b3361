"""File tool figures: what confinement, atomic writes and the model-facing extras cost.

    .venv/bin/python bench/file_tools_bench.py [--files 1500] [--lines 200] [--repeat 5]

Each file tool against the plain standard-library way of doing the same thing (the peer) on a
generated tree in a temporary folder: median milliseconds of ``--repeat`` runs, and the ratio.
The search compares its two backends (ripgrep when on PATH, Python ``re``) with ``grep -rn``.
The last rows are the cost of edit_file's "closest lines" when old_text is not found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.errors import ToolError  # noqa: E402
from tool.files import FileTools  # noqa: E402


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def build_tree(root: Path, files: int, lines: int) -> None:
    body = "".join(f"def function_{i}(value):\n    return value * {i}  # plain code line\n"
                   for i in range(lines // 2))
    for i in range(files):
        folder = root / f"pkg{i % 30}" / f"sub{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        text = body + ("NEEDLE_marker = True\n" if i % 100 == 0 else "")
        (folder / f"mod{i}.py").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1500)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, float, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        root.mkdir()
        build_tree(root, args.files, args.lines)
        size_mb = sum(p.stat().st_size for p in root.rglob("*.py")) / 1e6
        rg = shutil.which("rg")
        python_tools = FileTools(root, rg=None)
        big = root / "big.py"
        big.write_text("".join(f"line_{i} = {i}\n" for i in range(5000)))

        # list_files: a recursive listing (depth 3 covers the tree) against os.walk collecting names and sizes
        def peer_walk() -> None:
            for folder, _, names in os.walk(root):
                for name in names:
                    os.lstat(os.path.join(folder, name))
        rows.append(("list_files recursive (cap 200)", median_ms(lambda: python_tools.list_files(recursive=True),
                                                                 args.repeat), "os.walk + lstat", median_ms(peer_walk, args.repeat)))

        # read_file: a 5000-line file, first part up to the cap, against read_text
        rows.append(("read_file 5000-line file", median_ms(lambda: python_tools.read_file("big.py"), args.repeat),
                     "Path.read_text", median_ms(big.read_text, args.repeat)))
        rows.append(("read_file lines 4000-4100", median_ms(
            lambda: python_tools.read_file("big.py", start_line=4000, end_line=4100), args.repeat),
            "Path.read_text", median_ms(big.read_text, args.repeat)))

        # write_file: atomic (temp file, fsync, rename) against a plain write
        content = big.read_text()
        rows.append(("write_file 5000 lines (atomic, fsync)", median_ms(
            lambda: python_tools.write_file("out.py", content), args.repeat),
            "Path.write_text", median_ms(lambda: (root / "plain.py").write_text(content), args.repeat)))

        # edit_file: one unique replacement, read + check + atomic write, against str.replace + write
        def edit_round() -> None:
            python_tools.edit_file("big.py", "line_2500 = 2500\n", "line_2500 = -1\n")
            python_tools.edit_file("big.py", "line_2500 = -1\n", "line_2500 = 2500\n")

        def peer_edit() -> None:
            for old, new in (("line_2500 = 2500\n", "line_2500 = -1\n"), ("line_2500 = -1\n", "line_2500 = 2500\n")):
                (root / "plain.py").write_text(big.read_text().replace(old, new, 1))
        rows.append(("edit_file x2 on 5000 lines", median_ms(edit_round, args.repeat),
                     "str.replace + write x2", median_ms(peer_edit, args.repeat)))

        # search_files: a rare pattern over the whole tree
        def grep() -> None:
            subprocess.run(["grep", "-rn", "NEEDLE_marker", str(root)], capture_output=True, check=False)
        grep_ms = median_ms(grep, args.repeat) if shutil.which("grep") else float("nan")
        rows.append((f"search_files python ({args.files} files, {size_mb:.1f} MB)",
                     median_ms(lambda: python_tools.search_files("NEEDLE_marker"), args.repeat), "grep -rn", grep_ms))
        if rg:
            rg_tools = FileTools(root, rg=rg)
            assert rg_tools.search_files("NEEDLE_marker").content == python_tools.search_files("NEEDLE_marker").content
            rows.append(("search_files ripgrep", median_ms(lambda: rg_tools.search_files("NEEDLE_marker"), args.repeat),
                         "grep -rn", grep_ms))
            rows.append(("search_files ripgrep, 50 of many", median_ms(
                lambda: rg_tools.search_files("return value"), args.repeat), "grep -rn", grep_ms))
        rows.append(("search_files python, 50 of many", median_ms(
            lambda: python_tools.search_files("return value"), args.repeat), "grep -rn", grep_ms))

        # edit_file not found: the closest-lines search, against the exact lookup that failed
        for count in (1000, 5000, 20000):
            (root / f"n{count}.py").write_text("".join(f"value_{i} = compute({i}, 'x')\n" for i in range(count)))
            text = (root / f"n{count}.py").read_text()

            def miss(count: int = count) -> None:
                try:
                    python_tools.edit_file(f"n{count}.py", "value_77 = compute(77, 'y')\nvalue_78 = compute(78, 'x')", "z")
                except ToolError:
                    pass
            rows.append((f"edit_file not found, {count} lines", median_ms(miss, args.repeat),
                         "str.find", median_ms(lambda t=text: t.find("value_77 = compute(77, 'y')"), args.repeat)))

    width = max(len(r[0]) for r in rows)
    pwidth = max(len(r[2]) for r in rows)
    print(f"{'operation':<{width}}  {'ms':>8}  {'peer':<{pwidth}}  {'peer ms':>8}  {'ratio':>7}")
    for name, ms, peer, peer_ms in rows:
        print(f"{name:<{width}}  {ms:8.2f}  {peer:<{pwidth}}  {peer_ms:8.2f}  {ms / peer_ms:7.1f}")
    print(f"\nripgrep: {rg or 'not on PATH'}; {args.files} files of {args.lines} lines; median of {args.repeat} runs")


if __name__ == "__main__":
    main()
