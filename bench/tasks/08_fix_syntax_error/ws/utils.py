def clamp(value, low, high):
    """Limit value to the range [low, high]."""
    if value < low:
        return low
    if value > high
        return high
    return value


def chunks(items, size):
    """Split items into lists of at most size items."""
    return [items[i:i + size] for i in range(0, len(items), size)]
