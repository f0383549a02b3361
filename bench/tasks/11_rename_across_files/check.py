from pathlib import Path

from checklib import expect, load, run

shapes = load("shapes")
expect(hasattr(shapes, "circle_area"), "shapes has no circle_area")
expect(not hasattr(shapes, "calc_area"), "shapes still has calc_area")
expect(abs(shapes.circle_area(2) - 12.566370614359172) < 1e-9, "circle_area(2) is wrong")
report = load("report")
expect(abs(report.total_area([1, 2], [3]) - 24.707963267948966) < 1e-9, "total_area is wrong")
r = run(["python", "main.py"])
expect(r.returncode == 0 and r.stdout == "circle r=2: 12.57\ntotal: 24.71\n", f"main.py: {r.stdout!r} {r.stderr[-300:]}")
left = [p.name for p in Path(".").glob("*.py") if "calc_area" in p.read_text()]
expect(not left, f"calc_area still used in {left}")
