def compute_tax(amount, region):
    rate = {"EU": 0.21, "UK": 0.20}.get(region, 0.0)
    return round(amount * rate, 2)


def invoice_total(lines, region):
    subtotal = sum(qty * price for qty, price in lines)
    return round(subtotal + compute_tax(subtotal, region), 2)


def quote_total(price, qty, region, discount=0.0):
    amount = price * qty * (1 - discount)
    return round(amount + compute_tax(amount, region), 2)
