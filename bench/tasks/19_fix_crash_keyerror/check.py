from checklib import expect, original, read, run

expect(read("orders.json") == original("orders.json"), "orders.json was changed")
r = run(["python", "report.py"])
expect(r.returncode == 0, f"report.py still fails: {r.stderr[-300:]}")
expect("TOTAL 377.97" in r.stdout, f"wrong total: {r.stdout!r}")
expect("A-101 mouse" in r.stdout and "59.97" in r.stdout, f"wrong lines: {r.stdout!r}")
