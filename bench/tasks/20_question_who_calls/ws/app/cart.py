from app.storage import load_record


def cart_total(cart_id):
    cart = load_record(cart_id)
    return sum(item["price"] * item["qty"] for item in cart["items"])


def add_item(cart, name, price, qty=1):
    cart["items"].append({"name": name, "price": price, "qty": qty})
    return cart
