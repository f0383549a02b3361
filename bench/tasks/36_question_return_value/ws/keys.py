import re


def make_key(title):
    """A stable cache key for a title."""
    words = re.split(r"\s+", title.strip().lower())
    base = "_".join(words)
    return f"{base}-{len(base)}"
