"""The static checks a skill passes: one bad example per rule, and the schema a good one gets."""

from __future__ import annotations

import pytest

from tool.skills.schema import SkillInvalid, split_docstring
from tool.skills.validate import analyse, check_name

from skills_helpers import skill_source


def refused(source: str, function: str = "add", **kwargs) -> str:
    with pytest.raises(SkillInvalid) as info:
        analyse(source, function, **kwargs)
    return str(info.value)


def test_a_good_skill_gets_a_json_schema_from_its_hints_defaults_and_docstring():
    source = '''
import re
from typing import Literal, Optional

WORD = re.compile(r"\\w+")


def _words(text):
    return WORD.findall(text)


def count_words(text: str, top: int = 3, mode: Literal["all", "lower"] = "all", ratio: float | None = None,
                tags: list[str] | None = None, weights: dict[str, float] = {}, strict: bool = False,
                maybe: Optional[int] = None) -> dict[str, int]:
    """Count the most common words.

    Args:
        text: the text to count
        top (int): how many words to return;
            at least 1
        mode: how to normalise
        ratio: a ratio
        tags: tags to keep
        weights: a weight per word
        strict: refuse empty text
        maybe: perhaps a number

    Returns:
        word -> count
    """
    return {w: 1 for w in _words(text)[:top]}


if __name__ == "__main__":
    print(count_words(sample_text))
'''
    spec = analyse(source, "count_words")
    assert spec.name == "count_words"
    assert spec.description == "Count the most common words. Returns: word -> count"
    assert spec.imports == ("re", "typing")
    assert spec.parameters == {
        "type": "object", "additionalProperties": False, "required": ["text"],
        "properties": {
            "text": {"type": "string", "description": "the text to count"},
            "top": {"type": "integer", "default": 3, "description": "how many words to return; at least 1"},
            "mode": {"enum": ["all", "lower"], "default": "all", "description": "how to normalise"},
            "ratio": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None, "description": "a ratio"},
            "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}], "default": None,
                     "description": "tags to keep"},
            "weights": {"type": "object", "additionalProperties": {"type": "number"}, "default": {},
                        "description": "a weight per word"},
            "strict": {"type": "boolean", "default": False, "description": "refuse empty text"},
            "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None,
                      "description": "perhaps a number"},
        }}
    assert spec.signature() == "count_words(text, top?, mode?, ratio?, tags?, weights?, strict?, maybe?)"
    assert len(spec.function_sha256) == 64


def test_string_annotations_and_a_given_description_and_name_are_used():
    source = "from __future__ import annotations\n" + skill_source(params="a: 'int', b: int")
    spec = analyse(source, "add", name="plus", description="  Adds\n two ints. ")
    assert (spec.name, spec.function, spec.description) == ("plus", "add", "Adds two ints.")
    assert spec.parameters["properties"]["a"]["type"] == "integer"


def test_a_syntax_error_is_refused_with_its_line():
    assert "does not parse: line 2" in refused("def add(a: int) -> int:\n    return (\n")


def test_a_missing_function_is_refused_listing_the_module_level_ones():
    message = refused(skill_source("other"), "add")
    assert "no function 'add' at module level" in message and "other" in message


def test_a_function_nested_in_a_class_is_not_at_module_level():
    source = "class Box:\n" + "\n".join("    " + line for line in skill_source().splitlines())
    assert "not at module level" in refused(source)


def test_an_async_function_is_refused():
    assert "async" in refused("async " + skill_source())


def test_a_read_of_a_global_defined_elsewhere_is_refused():
    message = refused(skill_source(body="return a + b + OFFSET"))
    assert "'OFFSET' is not defined in the file" in message and "line 8:" in message


def test_a_helper_reading_an_undefined_global_is_refused_too():
    source = skill_source(body="return helper(a) + b") + "\n\ndef helper(x):\n    return x * SCALE\n"
    assert "'SCALE' is not defined" in refused(source)


def test_a_name_set_only_under_the_main_guard_does_not_count_as_defined():
    source = skill_source(body="return a + b + SAMPLE") + '\nif __name__ == "__main__":\n    SAMPLE = 1\n'
    assert "'SAMPLE' is not defined in the file" in refused(source)


def test_module_constants_helpers_imports_and_comprehensions_are_fine():
    source = ("import math\nLIMIT = 10\n\ndef helper(x):\n    return x\n\n"
              + skill_source(body="total = sum(helper(v) for v in range(a))\nreturn min(total + b, LIMIT) + "
                                  "math.floor(0.5)"))
    assert analyse(source, "add").imports == ("math",)


def test_a_relative_import_is_refused():
    assert "relative import" in refused("from . import helpers\n" + skill_source())


def test_a_star_import_is_refused():
    assert "import *" in refused("from math import *\n" + skill_source())


def test_a_package_that_is_not_installed_is_refused():
    assert "'no_such_package_xyz' is not installed" in refused("import no_such_package_xyz\n" + skill_source())


def test_a_module_of_the_project_itself_is_refused_because_the_sandbox_cannot_import_it():
    message = refused("from tool import registry\n" + skill_source())
    assert "local module" in message


def test_an_import_inside_the_function_is_checked_too():
    assert "not installed" in refused(skill_source(body="import no_such_package_xyz\nreturn a + b"))


def test_an_optional_import_guarded_by_import_error_may_be_missing():
    source = ("try:\n    import no_such_package_xyz as fast\nexcept ImportError:\n    fast = None\n\n"
              + skill_source(body="return a + b if fast is None else 0"))
    assert analyse(source, "add").imports == ()


def test_module_level_try_may_only_hold_imports_and_assignments():
    source = "try:\n    import json\nexcept ImportError:\n    print('no json')\n\n" + skill_source()
    assert "module-level code" in refused(source)


def test_an_installed_package_is_accepted():
    assert analyse("import jsonschema\n" + skill_source(), "add").imports == ("jsonschema",)


def test_module_level_code_that_would_run_on_every_call_is_refused():
    message = refused(skill_source() + "print(add(1, 2))\n")
    assert "module-level code (print(add(1, 2)))" in message and "__main__" in message


def test_star_args_and_kwargs_are_refused():
    assert "*rest" in refused(skill_source(params="a: int, b: int, *rest: int"))
    assert "**extra" in refused(skill_source(params="a: int, b: int, **extra: int"))


def test_positional_only_parameters_are_refused():
    assert "positional-only" in refused(skill_source(params="a: int, /, b: int"))


def test_a_parameter_without_a_type_hint_is_refused():
    assert "parameter 'b' of add has no type hint" in refused(skill_source(params="a: int, b"))


@pytest.mark.parametrize("hint, words", [
    ("tuple[int, int]", "no JSON form"), ("set[str]", "no JSON form"), ("Any", "typed Any"),
    ("bytes", "no JSON Schema form"), ("dict[int, str]", "dict[str, ...]"), ("Literal[object]", "Literal"),
])
def test_a_type_hint_without_a_json_form_is_refused(hint, words):
    head = "from typing import Any, Literal\n"
    assert words in refused(skill_source(params=f"a: int, b: {hint}", head=head))


def test_a_missing_return_annotation_is_refused():
    source = skill_source().replace(" -> int:", ":")
    assert "no return annotation" in refused(source)


def test_a_missing_docstring_is_refused():
    source = "def add(a: int, b: int) -> int:\n    return a + b\n"
    assert "has no docstring" in refused(source)


def test_a_docstring_without_args_for_each_parameter_is_refused():
    message = refused(skill_source(args_doc="        a: the first"))
    assert "does not describe 'b'" in message and "Args:" in message


def test_decorators_are_refused():
    source = "import functools\n\n@functools.lru_cache\n" + skill_source()
    assert "decorators" in refused(source)


@pytest.mark.parametrize("name, words", [
    ("../evil", "lower_snake_case"), ("a/b", "lower_snake_case"), ("Add", "lower_snake_case"),
    ("add-two", "lower_snake_case"), ("_add", "lower_snake_case"), ("", "empty"), ("x" * 49, "at most 48"),
    ("class", "keyword"), ("shell", "built-in"),
])
def test_bad_tool_names_are_refused(name, words):
    assert words in refused(skill_source(), name=name, reserved={"shell"})


def test_check_name_accepts_lower_snake_case():
    assert check_name("parse_dates_2") == "parse_dates_2"


def test_a_huge_file_is_refused():
    assert "larger than" in refused(skill_source() + "#" * (300 * 1024))


def test_docstring_sections_are_split():
    summary, args, returns = split_docstring("Do it.\nReally.\n\nArgs:\n    x (int): one\n        more\n"
                                             "    y: two\n\nReturns:\n    a thing\n")
    assert (summary, args, returns) == ("Do it. Really.", {"x": "one more", "y": "two"}, "a thing")
