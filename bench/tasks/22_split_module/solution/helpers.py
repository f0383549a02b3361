def normalize_name(name):
    return " ".join(part.capitalize() for part in name.split())


def parse_price(text):
    text = text.strip().lstrip("$")
    return round(float(text.replace(",", "")), 2)


def format_money(value):
    return f"${value:,.2f}"
