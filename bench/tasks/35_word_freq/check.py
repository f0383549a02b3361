import tempfile
from pathlib import Path

from checklib import expect, read, run


def top3(path: str) -> list[tuple[str, int]]:
    r = run(["python", "wordfreq.py", path])
    expect(r.returncode == 0, f"python wordfreq.py {path} fails: {r.stderr[-300:]}")
    out = []
    for line in r.stdout.strip().splitlines():
        parts = line.replace(":", " ").replace(",", " ").split()
        expect(len(parts) == 2 and parts[1].isdigit(), f"bad output line {line!r}")
        out.append((parts[0].lower(), int(parts[1])))
    return out


with tempfile.TemporaryDirectory() as tmp:
    text = Path(tmp) / "t.txt"
    text.write_text("Red, red! RED blue.\nGreen blue red; green? Yellow blue\n")
    got = top3(str(text))
    expect(got == [("red", 4), ("blue", 3), ("green", 2)], f"on a hidden text it prints {got}")
want = [("on", 6), ("the", 4), ("and", 3)]
expect(top3("poem.txt") == want, f"on poem.txt it prints {top3('poem.txt')}")
saved = [tuple(line.replace(":", " ").split()) for line in read("top3.txt").strip().splitlines()]
expect([(w.lower(), int(c)) for w, c in saved] == want, f"top3.txt has {saved}")
