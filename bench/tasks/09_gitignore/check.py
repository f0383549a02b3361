import shutil
import subprocess
import tempfile
from pathlib import Path

from checklib import WS, expect, read

rules = read(".gitignore")
# judge the rules in a scratch repository, so whatever the agent did to this folder does not matter
with tempfile.TemporaryDirectory() as tmp:
    shutil.copy(WS / ".gitignore", Path(tmp) / ".gitignore")
    subprocess.run(["git", "init", "-q", tmp], check=True)

    def ignored(path: str) -> bool:
        (Path(tmp) / path).parent.mkdir(parents=True, exist_ok=True)
        (Path(tmp) / path).touch()
        return subprocess.run(["git", "-C", tmp, "check-ignore", "-q", path]).returncode == 0

    for path in ["__pycache__/mod.cpython-311.pyc", "src/pkg/__pycache__/x.pyc", "tools/a.pyc", ".env",
                 "build/lib/x.py", "build/out.txt"]:
        expect(ignored(path), f"{path} is not ignored")
    for path in ["main.py", "src/pkg/mod.py", "README.md", "src/builder.py", ".gitignore", "env.py"]:
        expect(not ignored(path), f"{path} is ignored but should not be")
