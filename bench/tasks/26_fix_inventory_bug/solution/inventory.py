class Inventory:
    def __init__(self):
        self.stock = {}

    def add(self, sku, qty):
        if qty <= 0:
            raise ValueError("qty must be positive")
        self.stock[sku] = self.stock.get(sku, 0) + qty

    def remove(self, sku, qty):
        have = self.stock.get(sku, 0)
        if qty > have:
            raise ValueError(f"only {have} of {sku} in stock")
        self.stock[sku] = have - qty

    def count(self, sku):
        return self.stock.get(sku, 0)

    def low_stock(self, threshold=5):
        """SKUs with fewer than `threshold` items left, sorted, sold-out ones included."""
        return sorted(sku for sku, qty in self.stock.items() if qty < threshold)
