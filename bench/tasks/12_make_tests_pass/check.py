from checklib import expect, original, pytest, read

expect(read("tests/test_calc.py") == original("tests/test_calc.py"), "tests/test_calc.py was changed")
r = pytest("tests")
expect(r.returncode == 0, f"tests fail: {r.stdout[-400:]}")
from checklib import load  # noqa: E402

m = load("calc")
expect(m.average([10]) == 10 and m.percent_change(10, 5) == -50.0 and m.median([5]) == 5, "calc is wrong")
