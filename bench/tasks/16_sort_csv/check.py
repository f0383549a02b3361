import csv

from checklib import TASK_DIR, expect, original, read, read_csv

expect(read("people.csv") == original("people.csv"), "people.csv was changed")
with open(TASK_DIR / "ws" / "people.csv", newline="") as f:
    rows = list(csv.DictReader(f))
want = sorted(rows, key=lambda r: int(r["age"]))
header = read("sorted.csv").splitlines()[0]
expect([h.strip() for h in header.split(",")] == ["name", "age", "city"], f"header is {header!r}")
got = read_csv("sorted.csv")
expect([r["name"] for r in got] == [r["name"] for r in want], f"order is {[r['name'] for r in got]}")
expect(all(g == w for g, w in zip(got, want)), "some rows changed")
