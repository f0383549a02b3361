VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def roman_to_int(numeral):
    """Convert a Roman numeral such as 'XIV' or 'mcmxc' (any case) to an int.

    Subtractive pairs count as usual: 'IV' is 4, 'XC' is 90, 'CM' is 900.
    An empty string or a character that is not a Roman digit raises ValueError.
    """
    raise NotImplementedError
