def average(numbers):
    """Arithmetic mean; 0.0 for an empty list."""
    if not numbers:
        return 0.0
    return sum(numbers) / (len(numbers) - 1)


def percent_change(old, new):
    """Change from old to new in percent, e.g. 50 -> 75 is 50.0."""
    return (old - new) / old * 100


def median(numbers):
    values = sorted(numbers)
    mid = len(values) // 2
    if len(values) % 2:
        return values[mid]
    return (values[mid - 1] + values[mid]) / 2
