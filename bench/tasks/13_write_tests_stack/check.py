import shutil
import tempfile
from pathlib import Path

from checklib import TASK_DIR, WS, expect, original, pytest, read

tests = read("test_stack.py")
expect(tests.count("def test") >= 2, "fewer than 2 tests in test_stack.py")
expect(read("stack.py") == original("stack.py"), "stack.py was changed")


def run_tests_against(stack_src: str) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(WS / "test_stack.py", Path(tmp) / "test_stack.py")
        (Path(tmp) / "stack.py").write_text(stack_src)
        return pytest("test_stack.py", cwd=Path(tmp)).returncode == 0


expect(run_tests_against(original("stack.py")), "the tests fail on the correct Stack")
mutants = sorted((TASK_DIR / "mutants").glob("*.py"))
caught = [m.stem for m in mutants if not run_tests_against(m.read_text())]
expect(len(caught) >= 3, f"the tests catch only {caught} of {[m.stem for m in mutants]} broken Stacks")
