from checklib import expect, load, raises

m = load("bank")
a, b = m.Account("a", 100), m.Account("b", 5)
expect(hasattr(a, "transfer"), "Account has no transfer method")
a.transfer(b, 30)
expect((a.balance, b.balance) == (70, 35), f"after transfer(b, 30): {(a.balance, b.balance)}")
for bad in (71, 0, -5):
    expect(raises(ValueError, a.transfer, b, bad), f"transfer({bad}) does not raise ValueError")
    expect((a.balance, b.balance) == (70, 35), f"a failed transfer({bad}) changed balances")
a.transfer(b, 70)
expect((a.balance, b.balance) == (0, 105), "transferring the whole balance failed")
