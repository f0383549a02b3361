import pytest

from inventory import Inventory


def test_add_and_count():
    inv = Inventory()
    inv.add("apple", 3)
    inv.add("apple", 2)
    assert inv.count("apple") == 5
    assert inv.count("pear") == 0


def test_remove_too_many():
    inv = Inventory()
    inv.add("apple", 1)
    with pytest.raises(ValueError):
        inv.remove("apple", 2)


def test_low_stock_includes_sold_out():
    inv = Inventory()
    inv.add("apple", 10)
    inv.add("pear", 2)
    inv.add("plum", 4)
    inv.remove("plum", 4)
    assert inv.low_stock() == ["pear", "plum"]
