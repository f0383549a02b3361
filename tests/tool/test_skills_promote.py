"""promote_skill: the path and name checks, examples run in the sandbox, versions and restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tool.skills.files import HEADER_START, SkillStore, split_header

from skills_helpers import Setup, require_bwrap, skill_source, write


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    require_bwrap()
    return Setup(tmp_path / "ws")


def test_a_promoted_skill_is_written_with_a_header_recorded_and_offered(setup: Setup):
    write(setup.root / "lib" / "math_tools.py", "import math\n\n" + skill_source(body="return a + b + math.floor(0.5)"))
    result = setup.promote(file_path="lib/math_tools.py", function_name="add",
                           examples=[{"args": {"a": 2, "b": 3}, "expected": 5}, {"args": {"a": 0, "b": 0}}])
    assert result.ok, result.content
    assert "new skill add(a, b)" in result.content and "2 examples passed in the sandbox" in result.content
    text = (setup.skills / "add.py").read_text()
    header, body = split_header(text)
    assert text.startswith(HEADER_START)
    assert {k: header[k] for k in ("name", "function", "version", "source", "description")} == {
        "name": "add", "function": "add", "version": "1", "source": "lib/math_tools.py",
        "description": "Add two numbers."}
    assert body == (setup.root / "lib" / "math_tools.py").read_text()  # the whole module: imports come along
    entry = SkillStore(setup.root).entry("add")
    assert entry is not None and entry["version"] == 1 and entry["sha256"] == header["sha256"]
    assert json.loads((setup.skills / "manifest.json").read_text())["skills"]["add"]["source"] == "lib/math_tools.py"
    assert "add" in setup.names()
    assert setup.call("add", a=40, b=2).content == "42"


def test_without_examples_the_module_must_still_load_in_the_sandbox(setup: Setup):
    write(setup.root / "s.py", skill_source())
    result = setup.promote(file_path="s.py", function_name="add")
    assert result.ok and "loads cleanly in the sandbox" in result.content


def test_a_failing_example_is_refused_and_nothing_is_written(setup: Setup):
    write(setup.root / "s.py", skill_source(body="return a - b"))
    result = setup.promote(file_path="s.py", function_name="add", examples=[{"args": {"a": 2, "b": 3}, "expected": 5}])
    assert not result.ok
    assert "example 1 (add(**{\"a\": 2, \"b\": 3})) returned -1, expected 5" in result.content
    assert not (setup.skills / "add.py").exists()


def test_an_example_that_raises_shows_the_trimmed_traceback(setup: Setup):
    write(setup.root / "s.py", skill_source(body="return a // b"))
    result = setup.promote(file_path="s.py", function_name="add", examples=[{"args": {"a": 1, "b": 0}}])
    assert not result.ok
    assert "ZeroDivisionError: integer division or modulo by zero" in result.content
    assert "runner_main" not in result.content  # the runner's own frames are cut


def test_an_example_returning_something_json_cannot_carry_is_refused(setup: Setup):
    write(setup.root / "s.py", skill_source(returns="list[int]", body="return {a, b}"))
    result = setup.promote(file_path="s.py", function_name="add", examples=[{"args": {"a": 1, "b": 2}}])
    assert not result.ok and "returned set, which is not JSON-serialisable" in result.content


def test_examples_whose_args_do_not_fit_the_schema_are_refused(setup: Setup):
    write(setup.root / "s.py", skill_source())
    result = setup.promote(file_path="s.py", function_name="add", examples=[{"args": {"a": "x", "b": 1}}])
    assert not result.ok and "example 1's args do not fit add(a, b)" in result.content
    result = setup.promote(file_path="s.py", function_name="add", examples=[{"a": 1}])
    assert not result.ok and "not an object with an 'args' object" in result.content


def test_a_module_whose_top_level_fails_in_the_sandbox_is_refused(setup: Setup):
    write(setup.root / "s.py", "import json\nDATA = json.loads('{oops')\n\n" + skill_source())
    result = setup.promote(file_path="s.py", function_name="add")
    assert not result.ok and "failed while its module loaded" in result.content and "JSONDecodeError" in result.content


@pytest.mark.parametrize("tool_name", ["../evil", "../../etc/passwd", "skills/../x", "a\x00b", "/tmp/evil"])
def test_a_tool_name_with_a_path_never_reaches_the_file_system(setup: Setup, tmp_path: Path, tool_name: str):
    write(setup.root / "s.py", skill_source())
    result = setup.promote(file_path="s.py", function_name="add", tool_name=tool_name)
    assert not result.ok and "lower_snake_case" in result.content
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "ws" / "evil.py").exists()
    assert not setup.skills.exists() or list(setup.skills.glob("*.py")) == []


@pytest.mark.parametrize("file_path, words", [
    ("../outside.py", "outside the workspace"), ("/etc/hostname", "outside the workspace"),
    ("missing.py", "does not exist"), ("notes.txt", "not a .py file"),
])
def test_file_paths_are_confined_to_the_workspace(setup: Setup, tmp_path: Path, file_path: str, words: str):
    write(tmp_path / "outside.py", skill_source())
    write(setup.root / "notes.txt", "hello")
    result = setup.promote(file_path=file_path, function_name="add")
    assert not result.ok and words in result.content


def test_a_symlink_out_of_the_workspace_is_refused(setup: Setup, tmp_path: Path):
    write(tmp_path / "secret.py", skill_source())
    (setup.root / "link.py").symlink_to(tmp_path / "secret.py")
    result = setup.promote(file_path="link.py", function_name="add")
    assert not result.ok and "symbolic link" in result.content


def test_the_name_of_a_registered_tool_is_refused(setup: Setup):
    write(setup.root / "s.py", skill_source())
    result = setup.promote(file_path="s.py", function_name="add", tool_name="promote_skill")
    assert not result.ok and "built-in tool" in result.content


def test_promoting_again_makes_a_new_version_and_restore_brings_an_old_one_back(setup: Setup):
    write(setup.root / "s.py", skill_source(body="return a + b"))
    assert setup.promote(file_path="s.py", function_name="add").ok
    write(setup.root / "s.py", skill_source(body="return a * b"))
    second = setup.promote(file_path="s.py", function_name="add")
    assert second.ok and "new version 2 of skill" in second.content
    assert setup.call("add", a=3, b=4).content == "12"
    store = SkillStore(setup.root)
    assert store.versions("add") == [1, 2]
    assert "return a + b" in (setup.skills / ".versions" / "add@1.py").read_text()
    written = store.restore("add", 1)
    assert written.version == 3
    header, _ = split_header((setup.skills / "add.py").read_text())
    assert (header["version"], header["restored_from"]) == ("3", "1")
    assert setup.call("add", a=3, b=4).content == "7"
    assert [v["version"] for v in store.entry("add")["versions"]] == [1, 2, 3]


def test_remove_keeps_the_versions_and_restore_works_after_it(setup: Setup):
    write(setup.root / "s.py", skill_source())
    assert setup.promote(file_path="s.py", function_name="add").ok
    store = SkillStore(setup.root)
    store.remove("add")
    assert "add" not in setup.names()
    assert store.entry("add")["removed"] is True
    store.restore("add", 1)
    assert "add" in setup.names() and store.entry("add")["removed"] is False


def test_restoring_a_version_that_does_not_exist_says_which_do(setup: Setup):
    write(setup.root / "s.py", skill_source())
    assert setup.promote(file_path="s.py", function_name="add").ok
    with pytest.raises(Exception) as info:
        SkillStore(setup.root).restore("add", 7)
    assert "no version 7" in str(info.value) and "add@1" in str(info.value)


def test_promoting_over_a_hand_written_file_keeps_it_as_version_1(setup: Setup):
    write(setup.skills / "add.py", skill_source(body="return a + b + 100"))
    write(setup.root / "s.py", skill_source())
    result = setup.promote(file_path="s.py", function_name="add")
    assert result.ok and "new version 2 of skill" in result.content
    store = SkillStore(setup.root)
    assert store.versions("add") == [1, 2]
    assert setup.call("add", a=1, b=1).content == "2"
    assert store.restore("add", 1).version == 3
    assert setup.call("add", a=1, b=1).content == "102"
