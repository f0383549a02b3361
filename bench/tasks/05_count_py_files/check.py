# the answer is checked by answer_contains in task.toml; the files must still be there
from pathlib import Path

from checklib import expect

expect(len(list(Path("app").rglob("*.py"))) == 5, "files under app/ were removed")
