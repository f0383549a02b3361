import json


def load_orders(path="orders.json"):
    with open(path) as f:
        return json.load(f)


def order_total(order):
    return order["qty"] * order["price"]


def main():
    orders = load_orders()
    for order in orders:
        print(f"{order['id']} {order['item']:<10} {order_total(order):8.2f}")
    print(f"TOTAL {sum(order_total(o) for o in orders):.2f}")


if __name__ == "__main__":
    main()
