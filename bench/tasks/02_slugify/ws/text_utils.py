"""Small text helpers."""


def shout(text):
    return text.upper() + "!"
