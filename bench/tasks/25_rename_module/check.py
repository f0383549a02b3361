from pathlib import Path

from checklib import expect, load, pytest, run

expect(not Path("util.py").exists(), "util.py still exists")
m = load("textkit")
expect(m.word_count("a b c") == 3 and m.title_case("ab cd") == "Ab Cd", "textkit functions broke")
r = run(["python", "main.py"])
expect(r.returncode == 0 and r.stdout == "The Quick Brown Fox Jumps Over The Lazy Dog\n9 words\n",
       f"python main.py: {r.stdout!r} {r.stderr[-300:]}")
tests = list(Path("tests").glob("test_*.py"))
expect(tests, "the tests are gone")
r = pytest("tests")
expect(r.returncode == 0 and "2 passed" in r.stdout, f"tests: {r.stdout[-300:]}")
