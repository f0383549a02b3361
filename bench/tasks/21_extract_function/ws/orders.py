def invoice_total(lines, region):
    subtotal = sum(qty * price for qty, price in lines)
    if region == "EU":
        tax = subtotal * 0.21
    elif region == "UK":
        tax = subtotal * 0.20
    else:
        tax = 0.0
    tax = round(tax, 2)
    return round(subtotal + tax, 2)


def quote_total(price, qty, region, discount=0.0):
    amount = price * qty * (1 - discount)
    if region == "EU":
        tax = amount * 0.21
    elif region == "UK":
        tax = amount * 0.20
    else:
        tax = 0.0
    tax = round(tax, 2)
    return round(amount + tax, 2)
