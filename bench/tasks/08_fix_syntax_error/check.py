from checklib import expect, load

m = load("utils")
expect(m.clamp(5, 0, 3) == 3 and m.clamp(-1, 0, 3) == 0 and m.clamp(2, 0, 3) == 2, "clamp is wrong")
expect(m.chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]], "chunks is wrong")
