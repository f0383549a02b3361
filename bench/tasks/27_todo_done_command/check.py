import json
import shutil
import tempfile
from pathlib import Path

from checklib import WS, expect, run

# run the agent's todo.py in a scratch folder so its todos.json is ours
with tempfile.TemporaryDirectory() as tmp:
    shutil.copy(WS / "todo.py", Path(tmp) / "todo.py")

    def todo(*args: str):
        return run(["python", "todo.py", *args], cwd=Path(tmp))

    for text in ("first thing", "second thing", "third thing"):
        r = todo("add", text)
        expect(r.returncode == 0, f"add broke: {r.stderr[-300:]}")
    r = todo("done", "2")
    expect(r.returncode == 0, f"done 2 failed: {r.stdout!r} {r.stderr[-300:]}")
    r = todo("list")
    want = "1. [ ] first thing\n2. [x] second thing\n3. [ ] third thing\n"
    expect(r.stdout == want, f"list after done 2: {r.stdout!r}")
    items = json.loads((Path(tmp) / "todos.json").read_text())
    expect([i["done"] for i in items] == [False, True, False], f"todos.json: {items}")
    for bad in ("7", "0"):
        r = todo("done", bad)
        expect(r.returncode == 1, f"done {bad} exits {r.returncode}, expected 1")
        expect((r.stdout + r.stderr).strip(), f"done {bad} prints no error")
    expect(todo("list").stdout == want, "a failed done changed the list")
