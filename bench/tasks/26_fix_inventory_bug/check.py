from checklib import expect, load, original, pytest, read

expect(read("tests/test_inventory.py") == original("tests/test_inventory.py"), "the test was changed")
r = pytest("tests")
expect(r.returncode == 0, f"tests fail: {r.stdout[-400:]}")
m = load("inventory")
inv = m.Inventory()
inv.add("a", 9)
inv.add("b", 1)
inv.add("c", 5)
inv.remove("c", 5)
inv.add("d", 5)
expect(inv.low_stock() == ["b", "c"], f"low_stock() == {inv.low_stock()}")
expect(inv.low_stock(10) == ["a", "b", "c", "d"], f"low_stock(10) == {inv.low_stock(10)}")
