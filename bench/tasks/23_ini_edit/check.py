import configparser

from checklib import TASK_DIR, WS, expect

got, want = configparser.ConfigParser(), configparser.ConfigParser()
try:
    got.read(WS / "settings.ini")
except configparser.Error as exc:
    expect(False, f"settings.ini does not parse: {exc}")
want.read(TASK_DIR / "ws" / "settings.ini")
want["logging"]["level"] = "DEBUG"
as_dict = lambda c: {s: dict(c[s]) for s in c.sections()}  # noqa: E731
expect(as_dict(got) == as_dict(want), f"settings.ini is {as_dict(got)}")
