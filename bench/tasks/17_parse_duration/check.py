from checklib import expect, load, raises

m = load("durations")
expect(hasattr(m, "parse_duration"), "no parse_duration in durations.py")
for given, want in {"1h30m": 5400, "45s": 45, "2m5s": 125, "1h": 3600, "10m": 600, "1h2m3s": 3723,
                    "0s": 0}.items():
    try:
        got = m.parse_duration(given)
    except Exception as exc:
        got = exc
    expect(got == want, f"parse_duration({given!r}) gave {got!r}, expected {want}")
for bad in ["", "abc", "5x", "10", "h", "1m1h"]:
    expect(raises(ValueError, m.parse_duration, bad), f"parse_duration({bad!r}) does not raise ValueError")
