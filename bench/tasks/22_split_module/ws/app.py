import sys


def normalize_name(name):
    return " ".join(part.capitalize() for part in name.split())


def parse_price(text):
    text = text.strip().lstrip("$")
    return round(float(text.replace(",", "")), 2)


def format_money(value):
    return f"${value:,.2f}"


PRODUCTS = [("  desk  lamp", "$1,249.50"), ("office chair ", "89"), ("usb hub", "$12.3")]


def main(out=sys.stdout):
    total = 0.0
    for name, price in PRODUCTS:
        value = parse_price(price)
        total += value
        print(f"{normalize_name(name):<14}{format_money(value):>12}", file=out)
    print(f"{'Total':<14}{format_money(total):>12}", file=out)


if __name__ == "__main__":
    main()
