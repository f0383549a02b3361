VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def roman_to_int(numeral):
    """Convert a Roman numeral such as 'XIV' or 'mcmxc' (any case) to an int.

    Subtractive pairs count as usual: 'IV' is 4, 'XC' is 90, 'CM' is 900.
    An empty string or a character that is not a Roman digit raises ValueError.
    """
    numeral = numeral.upper()
    if not numeral or any(ch not in VALUES for ch in numeral):
        raise ValueError(f"not a Roman numeral: {numeral!r}")
    total = 0
    for ch, nxt in zip(numeral, numeral[1:] + " "):
        value = VALUES[ch]
        total += -value if nxt != " " and VALUES[nxt] > value else value
    return total
