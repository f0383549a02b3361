import ast

from checklib import TASK_DIR, expect, load, read, run

HELPERS = {"normalize_name", "parse_price", "format_money"}
r = run(["python", "app.py"])
want = run(["python", "app.py"], cwd=TASK_DIR / "ws").stdout
expect(r.returncode == 0 and r.stdout == want, f"python app.py prints {r.stdout!r} {r.stderr[-300:]}")


def defined(path: str) -> set[str]:
    return {n.name for n in ast.parse(read(path)).body if isinstance(n, ast.FunctionDef)}


expect(HELPERS <= defined("helpers.py"), f"helpers.py defines only {defined('helpers.py')}")
expect(not HELPERS & defined("app.py"), f"app.py still defines {HELPERS & defined('app.py')}")
h = load("helpers")
expect(h.normalize_name(" ada  lovelace ") == "Ada Lovelace", "normalize_name broke")
expect(h.parse_price("$2,000.456") == 2000.46 and h.format_money(1234.5) == "$1,234.50", "helpers broke")
