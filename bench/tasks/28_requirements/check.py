import re

from checklib import expect, read

names = set()
for line in read("requirements.txt").splitlines():
    line = line.split("#")[0].strip()
    if line:
        names.add(re.split(r"[\s=<>!~\[;]", line)[0].lower().replace("_", "-"))
want = {"flask", "requests", "numpy", "tqdm"}
expect(names == want, f"requirements.txt lists {sorted(names)}, expected {sorted(want)}")
