import csv

from checklib import TASK_DIR, expect, number_in, read

with open(TASK_DIR / "ws" / "sales.csv", newline="") as f:
    rows = list(csv.DictReader(f))
want = sum(float(r["amount"]) for r in rows) / len(rows)
got = number_in(read("mean.txt"))
expect(abs(got - want) <= 0.006, f"mean.txt says {got}, expected {want:.2f}")
