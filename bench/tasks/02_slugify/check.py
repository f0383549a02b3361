from checklib import expect, load

m = load("text_utils")
expect(hasattr(m, "slugify"), "no slugify in text_utils.py")
cases = {
    "Hello, World!": "hello-world",
    "  Python 3.11 -- notes ": "python-3-11-notes",
    "already-a-slug": "already-a-slug",
    "A__B": "a-b",
    "---": "",
    "Mixed CASE and   spaces": "mixed-case-and-spaces",
}
for given, want in cases.items():
    got = m.slugify(given)
    expect(got == want, f"slugify({given!r}) == {got!r}, expected {want!r}")
expect(m.shout("hi") == "HI!", "shout broke")
