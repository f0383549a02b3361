import ast

from checklib import expect, load, read

m = load("orders")
expect(hasattr(m, "compute_tax"), "no compute_tax in orders.py")
for amount, region, want in [(100, "EU", 21.0), (100, "UK", 20.0), (100, "US", 0.0), (10.555, "EU", 2.22)]:
    got = m.compute_tax(amount, region)
    expect(abs(got - want) < 0.006, f"compute_tax({amount}, {region!r}) == {got}, expected {want}")
cases = [
    (m.invoice_total, ([(2, 10.0), (1, 5.5)], "EU"), 30.85),
    (m.invoice_total, ([(3, 9.99)], "UK"), 35.96),
    (m.invoice_total, ([(1, 100.0)], "US"), 100.0),
    (m.quote_total, (19.99, 3, "EU"), 72.56),
    (m.quote_total, (50.0, 2, "UK", 0.1), 108.0),
    (m.quote_total, (10.0, 1, "JP"), 10.0),
]
for fn, args, want in cases:
    got = fn(*args)
    expect(abs(got - want) < 1e-9, f"{fn.__name__}{args} == {got}, expected {want}")
tree = ast.parse(read("orders.py"))
for name in ("invoice_total", "quote_total"):
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    expect(fn is not None, f"{name} is gone")
    calls = {c.func.id for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    expect("compute_tax" in calls, f"{name} does not call compute_tax")
    expect(not any(isinstance(c, ast.Constant) and c.value in (0.21, 0.20) for c in ast.walk(fn)),
           f"{name} still has its own tax rates")
