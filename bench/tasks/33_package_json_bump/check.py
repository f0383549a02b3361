import json

from checklib import TASK_DIR, expect, read_json

got = read_json("package.json")
want = json.loads((TASK_DIR / "ws" / "package.json").read_text())
want["version"] = "1.3.0"
want["scripts"]["lint"] = "eslint src"
expect(got.get("version") == "1.3.0", f"version is {got.get('version')!r}")
expect(got.get("scripts", {}).get("lint") == "eslint src", f"scripts: {got.get('scripts')}")
expect(got == want, "something else in package.json changed")
