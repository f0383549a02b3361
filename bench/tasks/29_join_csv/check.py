from checklib import expect, read, read_csv

header = read("totals.csv").splitlines()[0]
expect([h.strip() for h in header.split(",")] == ["name", "total"], f"header is {header!r}")
rows = read_csv("totals.csv")
want = [("Acme Corp", 100.0), ("Globex", 160.0), ("Initech", 0.0), ("Umbrella", 25.1), ("Hooli", 250.0)]
expect([r["name"] for r in rows] == [n for n, _ in want], f"names: {[r['name'] for r in rows]}")
for row, (name, total) in zip(rows, want):
    try:
        got = float(row["total"])
    except ValueError:
        got = None
    expect(got is not None and abs(got - total) < 0.005, f"{name}: total {row['total']!r}, expected {total:.2f}")
