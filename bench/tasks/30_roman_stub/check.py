from checklib import expect, load, raises

m = load("roman")
for given, want in {"I": 1, "III": 3, "IV": 4, "IX": 9, "XIV": 14, "XL": 40, "XC": 90, "CM": 900,
                    "MCMXC": 1990, "mmxxiv": 2024, "MMMCMXCIX": 3999, "lviii": 58}.items():
    try:
        got = m.roman_to_int(given)
    except Exception as exc:
        got = exc
    expect(got == want, f"roman_to_int({given!r}) gave {got!r}, expected {want}")
for bad in ("", "ABC", "X1"):
    expect(raises(ValueError, m.roman_to_int, bad), f"roman_to_int({bad!r}) does not raise ValueError")
