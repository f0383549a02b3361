from checklib import expect, load

m = load("pagination")
items = list(range(25))
expect(m.paginate(items, 1, 10) == list(range(10)), "page 1 is not the first 10 items")
expect(m.paginate(items, 2, 10) == list(range(10, 20)), "page 2 is wrong")
expect(m.paginate(items, 3, 10) == [20, 21, 22, 23, 24], "last page is wrong")
expect(m.paginate(items, 4, 10) == [], "page past the end is not empty")
expect(m.page_count(items, 10) == 3, "page_count broke")
