from app import storage
from app.cart import cart_total


def start_checkout(cart_id):
    return {"cart": cart_id, "total": cart_total(cart_id), "state": "open"}


def finish_checkout(order):
    order["state"] = "paid"
    storage.save_record(order["cart"] + ":order", order)
    return order
