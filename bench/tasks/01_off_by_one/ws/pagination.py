def paginate(items, page, size):
    """Return the items of page `page` (1-based), `size` items per page."""
    start = page * size
    return items[start:start + size]


def page_count(items, size):
    return (len(items) + size - 1) // size
