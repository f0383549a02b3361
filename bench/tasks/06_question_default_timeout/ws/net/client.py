import urllib.request

from net.settings import DEFAULT_TIMEOUT


def fetch_page(url, timeout=None):
    """Fetch a page and return its text."""
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode("utf-8", "replace")
