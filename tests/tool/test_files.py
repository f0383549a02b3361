"""The file tools as the model uses them: normal use, every failure and its message, confinement."""

from __future__ import annotations

import codecs
import json
import os
import stat
import time
from pathlib import Path

import pytest

from core.errors import ToolError
from core.messages import ToolCall
from core.paths import PathEscape
from core.tools import ToolResult
from tool.files import FileTools, file_tools
from tool.registry import ToolRegistry
from tool.search import compile_glob, find_rg, search

RG = find_rg()
needs_rg = pytest.mark.skipif(RG is None, reason="ripgrep (rg) is not installed: pip install ripgrep (the dev extra)")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "app.py").write_text('def slugify(text):\n    return text.lower()\n\n\nprint(slugify("A B"))\n')
    (root / "src" / "pkg" / "util.py").write_text("VALUE = 1\n")
    (root / "README.md").write_text("# Demo\nSlugify things.\n")
    for junk in (".git", ".agent", "__pycache__", ".venv"):
        (root / junk).mkdir()
        (root / junk / "slugify.txt").write_text("slugify hidden here\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text("slugify secret\n")
    return out


@pytest.fixture
def ft(ws: Path) -> FileTools:
    return FileTools(ws, rg=None)


def lines_of(result: ToolResult) -> list[str]:
    return result.content.split("\n")


# --- the tools as offered ----------------------------------------------------------------------

def test_the_five_tools_are_offered_with_strict_schemas(ws):
    tools = {t.name: t for t in file_tools(ws)}
    assert list(tools) == ["list_files", "read_file", "search_files", "write_file", "edit_file"]
    assert {n for n, t in tools.items() if t.read_only} == {"list_files", "read_file", "search_files"}
    required = {n: t.parameters["required"] for n, t in tools.items()}
    assert required == {"list_files": [], "read_file": ["path"], "search_files": ["pattern"],
                        "write_file": ["path", "content"], "edit_file": ["path", "old_text", "new_text"]}
    for tool in tools.values():
        assert tool.parameters["additionalProperties"] is False
        assert 40 < len(tool.description) <= 200
        assert all(spec.get("description") for spec in tool.parameters["properties"].values())
    ToolRegistry().register_all(tools.values())  # the registry's own schema checks accept them


def test_each_call_to_file_tools_returns_fresh_objects(ws):
    one, two = file_tools(ws), file_tools(ws)
    assert all(a is not b and a.fn.__self__ is not b.fn.__self__ for a, b in zip(one, two))


def test_through_the_registry_a_bad_argument_and_a_tool_error_reach_the_model_as_errors(ws):
    registry = ToolRegistry()
    registry.register_all(file_tools(ws))
    bad = registry.execute(ToolCall("read_file", {"path": "README.md", "lines": 3}))
    assert not bad.result.ok and "'lines' was unexpected" in bad.result.content
    missing = registry.execute(ToolCall("read_file", {"path": "nope.md"}))
    assert missing.result.content == "Error: 'nope.md' does not exist\nHint: list_files shows what exists"
    ok = registry.execute(ToolCall("read_file", {"path": "README.md", "start_line": "2"}))
    assert ok.result.content == "2| Slugify things.\n[lines 2-2 of 2]"


# --- list_files --------------------------------------------------------------------------------

def test_list_files_shows_one_level_with_sizes_and_skips_tool_folders(ft):
    result = ft.list_files()
    assert lines_of(result) == [
        "README.md  23 B",
        "src/  (2 entries)",
        "[not listed: .agent/, .git/, .venv/, __pycache__/]",
    ]
    assert result.summary == "listed the workspace: 1 folder, 1 file"


def test_list_files_recursive_lists_paths_from_the_workspace_root(ft, ws):
    (ws / "src" / "pkg" / "__pycache__").mkdir()
    result = ft.list_files("src", recursive=True)
    assert lines_of(result) == [
        "src/app.py  67 B",
        "src/pkg/",
        "src/pkg/util.py  10 B",
        "[not listed: src/pkg/__pycache__/]",
    ]
    assert result.summary == "listed src: 1 folder, 2 files"


def test_list_files_max_depth_stops_descending_and_counts_what_is_below(ft):
    assert lines_of(ft.list_files(".", recursive=True, max_depth=2))[:4] == [
        "README.md  23 B", "src/", "src/app.py  67 B", "src/pkg/  (1 entry)"]


def test_list_files_glob_matches_names_at_any_depth_or_paths_with_a_slash(ft):
    assert lines_of(ft.list_files(glob="*.py"))[:2] == ["src/app.py  67 B", "src/pkg/util.py  10 B"]
    assert lines_of(ft.list_files(glob="src/*.py"))[:1] == ["src/app.py  67 B"]
    assert lines_of(ft.list_files(glob="src/**/*.py"))[:2] == ["src/app.py  67 B", "src/pkg/util.py  10 B"]
    assert lines_of(ft.list_files(glob="*.rs"))[0] == "(no entries in the workspace match '*.rs')"


def test_list_files_glob_says_when_folders_were_too_deep(ft):
    result = ft.list_files(glob="*.py", max_depth=1)
    assert "[1 folder deeper than max_depth=1 not searched; raise max_depth to look inside]" in lines_of(result)


def test_list_files_cut_keeps_the_shallowest_and_says_how_to_see_more(ws):
    for i in range(5):
        (ws / "src" / "pkg" / f"m{i}.py").write_text("")
    tools = FileTools(ws, max_entries=4, rg=None)
    result = tools.list_files(recursive=True)
    assert lines_of(result) == [
        "README.md  23 B", "src/", "src/app.py  67 B", "src/pkg/",
        "[4 of 10 entries shown (the shallowest); list a subfolder, lower max_depth or add a glob to see the rest]",
        "[not listed: .agent/, .git/, .venv/, __pycache__/]",
    ]
    assert result.summary.endswith("(cut)")


def test_list_files_names_at_most_six_skipped_folders(ft, ws):
    for i in range(8):
        (ws / "src" / f"m{i}" / "__pycache__").mkdir(parents=True)
    result = ft.list_files("src", recursive=True)
    assert lines_of(result)[-1] == ("[not listed: src/m0/__pycache__/, src/m1/__pycache__/, src/m2/__pycache__/, "
                                    "src/m3/__pycache__/, src/m4/__pycache__/, src/m5/__pycache__/ and 2 more]")


def test_list_files_stops_after_the_scan_limit(ws):
    result = FileTools(ws, scan_limit=3, rg=None).list_files(recursive=True)
    assert "[stopped after 3 entries; list a subfolder or add a glob to see the rest]" in lines_of(result)


def test_list_files_on_an_empty_folder_a_file_and_a_missing_path(ft, ws):
    (ws / "empty").mkdir()
    assert ft.list_files("empty").content == "(empty is empty)"
    assert ft.list_files("README.md").content == "README.md  23 B  (a file; read_file shows its content)"
    with pytest.raises(ToolError, match="'nope' does not exist"):
        ft.list_files("nope")


def test_list_files_shows_symlinks_without_following_them(ft, ws, outside):
    (ws / "out").symlink_to(outside, target_is_directory=True)
    (ws / "secret.txt").symlink_to(outside / "secret.txt")
    result = ft.list_files(recursive=True)
    assert f"out -> {outside}  (symlink, not followed)" in lines_of(result)
    assert f"secret.txt -> {outside / 'secret.txt'}  (symlink, not followed)" in lines_of(result)
    assert not [line for line in lines_of(result) if line.startswith("out/")]  # not entered
    with pytest.raises(PathEscape):
        ft.list_files("out")


@pytest.mark.parametrize("path", ["..", "/etc", "~", "src/../.."])
def test_list_files_refuses_paths_outside(ft, path):
    with pytest.raises(PathEscape):
        ft.list_files(path)


# --- read_file ---------------------------------------------------------------------------------

def test_read_file_numbers_lines(ft):
    result = ft.read_file("src/app.py")
    assert result.content == ('1| def slugify(text):\n2|     return text.lower()\n3| \n4| \n'
                              '5| print(slugify("A B"))')
    assert result.summary == "read src/app.py (5 lines)"


def test_read_file_without_numbers_and_a_range(ft):
    result = ft.read_file("src/app.py", start_line=2, end_line=3, line_numbers=False)
    assert result.content == "    return text.lower()\n\n[lines 2-3 of 5]"
    assert result.summary == "read src/app.py lines 2-3 of 5"
    assert ft.read_file("src/app.py", start_line=5, end_line=99).content == '5| print(slugify("A B"))\n[lines 5-5 of 5]'


def test_read_file_range_errors_say_what_is_valid(ft):
    with pytest.raises(ToolError, match="start_line 9 is past the end of src/app.py, which has 5 lines") as info:
        ft.read_file("src/app.py", start_line=9)
    assert info.value.hint == "use a start_line from 1 to 5"
    with pytest.raises(ToolError, match="end_line 2 is before start_line 3"):
        ft.read_file("src/app.py", start_line=3, end_line=2)


def test_read_file_cuts_at_the_size_cap_and_says_how_to_read_on(ws):
    (ws / "long.txt").write_text("".join(f"line {i:03}\n" for i in range(1, 201)))
    tools = FileTools(ws, max_read_chars=100, rg=None)
    first = tools.read_file("long.txt")
    assert lines_of(first)[-1] == "[lines 1-7 of 200 shown; to read on, call read_file with start_line=8]"
    assert lines_of(first)[0] == "  1| line 001" and lines_of(first)[6] == "  7| line 007"
    assert len(first.content) < 100 + 80
    second = tools.read_file("long.txt", start_line=8)
    assert lines_of(second)[0] == "  8| line 008"


def test_read_file_shows_the_start_of_a_line_longer_than_the_cap(ws):
    (ws / "min.js").write_text("x" * 500 + "\nend\n")
    result = FileTools(ws, max_read_chars=50, rg=None).read_file("min.js")
    assert lines_of(result) == [
        "1| " + "x" * 47,
        "[line 1 is 500 characters long; only its first 47 are shown; search_files finds text inside it]",
        "[lines 1-1 of 2 shown; to read on, call read_file with start_line=2]",
    ]


@pytest.mark.parametrize("end", ["\n", ""], ids=["newline-at-end", "no-newline-at-end"])
def test_read_file_streams_files_above_the_load_limit(ws, end):
    # 2 MB: the wanted lines sit in the first chunk and the count continues through the others
    (ws / "big.log").write_text("".join(f"event {i:07}\n" for i in range(1, 140001))[:-1] + end)
    tools = FileTools(ws, max_read_bytes=1000, max_read_chars=60, rg=None)
    result = tools.read_file("big.log", start_line=4000, end_line=4002)
    assert result.content == ("4000| event 0004000\n4001| event 0004001\n4002| event 0004002\n"
                              "[lines 4000-4002 of 140000]")
    assert lines_of(tools.read_file("big.log", start_line=139999))[:3] == [
        "139999| event 0139999", "140000| event 0140000", "[lines 139999-140000 of 140000]"]
    assert lines_of(tools.read_file("big.log"))[-1] == ("[lines 1-2 of 140000 shown; to read on, call read_file "
                                                         "with start_line=3]")


def test_read_file_refuses_binary_files_saying_what_they_are(ft, ws):
    (ws / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    (ws / "blob.bin").write_bytes(b"abc\x00def")
    with pytest.raises(ToolError) as info:
        ft.read_file("logo.png")
    assert info.value.message == "logo.png is a binary file (PNG image, 108 B); read_file shows text only"
    with pytest.raises(ToolError, match=r"blob.bin is a binary file \(binary data, 7 B\)"):
        ft.read_file("blob.bin")


def test_read_file_decodes_bad_utf8_with_replacement_and_says_so(ft, ws):
    (ws / "latin.txt").write_bytes("café\nnaïve\n".encode("latin-1"))
    assert lines_of(ft.read_file("latin.txt")) == [
        "1| caf\ufffd", "2| na\ufffdve", "[the file is not valid UTF-8: undecodable bytes are shown as \ufffd]"]


def test_read_file_handles_utf16_boms_crlf_and_empty_files(ft, ws):
    (ws / "u16.txt").write_bytes(codecs.BOM_UTF16_LE + "hé\nthere\n".encode("utf-16-le"))
    (ws / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    (ws / "bom8.txt").write_bytes(codecs.BOM_UTF8 + b"hi\n")
    (ws / "empty.txt").write_text("")
    assert ft.read_file("u16.txt").content == "1| hé\n2| there"
    assert ft.read_file("crlf.txt").content == "1| one\n2| two"
    assert ft.read_file("bom8.txt").content == "1| hi"
    result = ft.read_file("empty.txt")
    assert (result.content, result.summary) == ("(empty.txt is empty)", "read empty.txt (empty)")


def test_read_file_refuses_folders_missing_files_and_paths_out(ft, ws, outside):
    with pytest.raises(ToolError, match="'src' is a folder, not a file"):
        ft.read_file("src")
    with pytest.raises(ToolError, match="'src/nope.py' does not exist"):
        ft.read_file("src/nope.py")
    (ws / "leak.txt").symlink_to(outside / "secret.txt")
    (ws / "out").symlink_to(outside, target_is_directory=True)
    for path in ("leak.txt", "out/secret.txt", "../outside/secret.txt", str(outside / "secret.txt"), "~/x"):
        with pytest.raises(PathEscape):
            ft.read_file(path)


# --- write_file --------------------------------------------------------------------------------

def test_write_file_creates_parents_and_reports_lines_and_bytes(ft, ws):
    result = ft.write_file("new/deep/mod.py", "a = 1\nb = 'é'\n")
    assert result.content == "Created new/deep/mod.py (2 lines, 15 bytes)."
    assert result.summary == "created new/deep/mod.py (2 lines)"
    assert (ws / "new" / "deep" / "mod.py").read_text() == "a = 1\nb = 'é'\n"
    assert ft.write_file("new/deep/mod.py", "x").content == "Overwrote new/deep/mod.py (1 line, 1 byte)."
    assert os.listdir(ws / "new" / "deep") == ["mod.py"]  # atomic: the temporary file was renamed away


def test_write_file_keeps_an_existing_files_permissions(ft, ws):
    script = ws / "run.sh"
    script.write_text("echo 1\n")
    script.chmod(0o755)
    ft.read_file("run.sh")  # read before write
    ft.write_file("run.sh", "echo 2\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755 and script.read_text() == "echo 2\n"


def test_write_file_refuses_the_agent_state_folder_folders_and_surrogates(ft):
    with pytest.raises(ToolError, match=r"'.agent/sessions.db' is inside .agent/, the agent's own state"):
        ft.write_file(".agent/sessions.db", "x")
    with pytest.raises(ToolError, match="'src' is a folder, not a file"):
        ft.write_file("src", "x")
    with pytest.raises(ToolError, match="unpaired surrogate"):
        ft.write_file("s.txt", "bad \ud800 text")


def test_write_file_never_writes_through_a_symlink_leading_out(ft, ws, outside):
    (ws / "leak.txt").symlink_to(outside / "secret.txt")
    (ws / "out").symlink_to(outside, target_is_directory=True)
    for path in ("leak.txt", "out/planted.txt", "../outside/planted.txt", str(outside / "planted.txt")):
        with pytest.raises(PathEscape):
            ft.write_file(path, "planted")
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "slugify secret\n"


# --- edit_file ---------------------------------------------------------------------------------

def test_edit_file_replaces_a_unique_text_and_shows_the_result(ft, ws):
    ft.read_file("src/app.py")  # read before write
    result = ft.edit_file("src/app.py", "return text.lower()", "return text.lower().replace(' ', '-')")
    assert result.content == (
        "Replaced 1 occurrence in src/app.py. The changed part now reads:\n"
        "1| def slugify(text):\n2|     return text.lower().replace(' ', '-')\n3| \n4| ")
    assert result.summary == "edited src/app.py (1 replacement)"
    assert "replace(' ', '-')" in (ws / "src" / "app.py").read_text()


def test_edit_file_shows_at_most_30_lines_of_a_long_replacement(ft, ws):
    ft.read_file("README.md")  # read before write
    result = ft.edit_file("README.md", "Slugify things.", "\n".join(f"row {i}" for i in range(1, 41)))
    assert lines_of(result)[1:3] == [" 1| # Demo", " 2| row 1"]
    assert lines_of(result)[-2:] == ["30| row 29", "(and 11 more lines)"]


def test_edit_file_can_delete_text(ft, ws):
    ft.read_file("README.md")  # read before write
    ft.edit_file("README.md", "Slugify things.\n", "")
    assert (ws / "README.md").read_text() == "# Demo\n"


def test_edit_file_not_found_shows_the_closest_lines(ft):
    ft.read_file("src/app.py")  # read before write
    with pytest.raises(ToolError) as info:
        ft.edit_file("src/app.py", "def slugify(txt):\n    return txt.lower()", "x")
    assert info.value.message == (
        "old_text was not found in src/app.py. The closest lines are 1-2 (98% similar):\n"
        "1| def slugify(text):\n2|     return text.lower()")
    assert info.value.hint.startswith("copy old_text exactly from the file")


def test_edit_file_not_found_says_when_only_whitespace_differs(ft):
    ft.read_file("src/app.py")  # read before write
    with pytest.raises(ToolError, match="the same words are there with different whitespace"):
        ft.edit_file("src/app.py", "def slugify(text):\n  return text.lower()", "x")


def test_edit_file_not_found_spots_line_numbers_copied_from_read_file(ft):
    ft.read_file("src/app.py")  # read before write
    with pytest.raises(ToolError, match="it includes the line numbers that read_file shows") as info:
        ft.edit_file("src/app.py", "1| def slugify(text):\n2|     return text.lower()", "x")
    assert info.value.hint == "leave out the 'N| ' prefixes; copy only the text after them"


def test_edit_file_not_found_with_nothing_close_says_to_read_again(ft):
    ft.read_file("src/app.py")  # read before write
    with pytest.raises(ToolError, match="and nothing in the file is close to it") as info:
        ft.edit_file("src/app.py", "zzzz qqqq 12345 @@@@", "x")
    assert info.value.hint.startswith("read_file it to see its current content")


def test_edit_file_several_matches_says_how_many_and_where(ft, ws):
    ft.read_file("src/app.py")  # read before write
    with pytest.raises(ToolError) as info:
        ft.edit_file("src/app.py", "slugify", "make_slug")
    assert info.value.message == "old_text occurs 2 times in src/app.py, at lines 1 and 5"
    assert "include more surrounding lines" in info.value.hint and "replace_all" in info.value.hint
    result = ft.edit_file("src/app.py", "slugify", "make_slug", replace_all=True)
    assert result.content == "Replaced 2 occurrences in src/app.py, now at lines 1 and 5."
    assert result.data["replacements"] == 2
    assert (ws / "src" / "app.py").read_text().count("make_slug") == 2


def test_edit_file_refuses_empty_or_unchanged_text(ft):
    ft.read_file("src/app.py")  # read before write
    with pytest.raises(ToolError, match="old_text is empty"):
        ft.edit_file("src/app.py", "", "x")
    with pytest.raises(ToolError, match="old_text and new_text are the same"):
        ft.edit_file("src/app.py", "slugify", "slugify")


def test_edit_file_keeps_crlf_line_endings_and_a_utf8_bom(ft, ws):
    (ws / "win.txt").write_bytes(codecs.BOM_UTF8 + b"one\r\ntwo\r\nthree\r\n")
    ft.read_file("win.txt")  # read before write
    ft.edit_file("win.txt", "one\ntwo", "uno\ndos")
    assert (ws / "win.txt").read_bytes() == codecs.BOM_UTF8 + b"uno\r\ndos\r\nthree\r\n"


def test_edit_file_refuses_binary_non_utf8_missing_and_state_files(ft, ws, outside):
    (ws / "blob.bin").write_bytes(b"a\x00b")
    (ws / "latin.txt").write_bytes("x\ncafé\n".encode("latin-1"))
    with pytest.raises(ToolError, match=r"blob.bin is a binary file \(binary data\)"):
        ft.edit_file("blob.bin", "a", "b")
    with pytest.raises(ToolError, match=r"latin.txt is not valid UTF-8 \(byte 0xe9 on line 2\)"):
        ft.edit_file("latin.txt", "x", "y")
    with pytest.raises(ToolError, match="'nope.py' does not exist"):
        ft.edit_file("nope.py", "a", "b")
    with pytest.raises(ToolError, match="inside .agent/"):
        ft.edit_file(".agent/slugify.txt", "slugify", "x")
    (ws / "leak.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PathEscape):
        ft.edit_file("leak.txt", "slugify", "x")
    assert (outside / "secret.txt").read_text() == "slugify secret\n"


# --- search_files ------------------------------------------------------------------------------

def test_search_files_lists_matching_lines_and_skips_tool_folders(ft):
    result = ft.search_files("slugify")
    assert result.content == 'src/app.py:1: def slugify(text):\nsrc/app.py:5: print(slugify("A B"))'
    assert result.summary == "2 matches in 1 file"
    assert result.data["backend"] == "python"


def test_search_files_options_ignore_case_glob_path_and_a_single_file(ft):
    assert lines_of(ft.search_files("slugify", ignore_case=True)) == [
        "README.md:2: Slugify things.", "src/app.py:1: def slugify(text):", 'src/app.py:5: print(slugify("A B"))']
    assert lines_of(ft.search_files("slugify", ignore_case=True, glob="*.md")) == ["README.md:2: Slugify things."]
    assert lines_of(ft.search_files("VALUE", path="src")) == ["src/pkg/util.py:1: VALUE = 1"]
    assert lines_of(ft.search_files("print", path="src/app.py")) == ['src/app.py:5: print(slugify("A B"))']


def test_search_files_cap_says_there_are_more(ft):
    result = ft.search_files(".", max_results=2)
    assert lines_of(result) == ["README.md:1: # Demo", "README.md:2: Slugify things.",
                                "[first 2 matching lines shown, there are more; narrow the pattern, add a glob "
                                "or a path, or raise max_results]"]
    assert result.summary == "2+ matches in 1 file"


def test_search_files_no_match_and_bad_patterns(ft):
    assert ft.search_files("nothing_like_this").content == "No matches for 'nothing_like_this' in the workspace."
    with pytest.raises(ToolError, match=r"the pattern 'slug\(' is not a valid regular expression: "
                                        r"missing \), unterminated subpattern at position 4"):
        ft.search_files("slug(")
    with pytest.raises(ToolError, match="POSIX class"):
        ft.search_files("[[:alpha:]]")
    with pytest.raises(ToolError, match="'\\[' without its '\\]'"):
        ft.search_files("x", glob="[abc")
    with pytest.raises(ToolError, match="'nope' does not exist"):
        ft.search_files("x", path="nope")


def test_search_files_skips_binary_files_and_shortens_long_lines(ft, ws):
    (ws / "blob.bin").write_bytes(b"slugify\x00")
    (ws / "min.js").write_text("a" * 1000 + "slugify" + "b" * 1000 + "\n")
    result = ft.search_files("slugify", glob="*.{bin,js}")
    assert result.content == "min.js:1: …" + "a" * 50 + "slugify" + "b" * 143 + "…"


def test_search_files_never_follows_symlinks_out(ft, ws, outside):
    (ws / "out").symlink_to(outside, target_is_directory=True)
    (ws / "leak.txt").symlink_to(outside / "secret.txt")
    assert "secret" not in ft.search_files("slugify").content
    with pytest.raises(PathEscape):
        ft.search_files("slugify", path="out")
    with pytest.raises(PathEscape):
        ft.search_files("slugify", path="leak.txt")


SAME_PATTERNS = [("slugify", {}), ("SLUG", {"ignore_case": True}), (r"^\s+return", {}), ("(text|VALUE)", {}),
                 (".", {"max_results": 3}), ("slugify", {"glob": "src/**"}), ("x", {"glob": "*.{py,md}"}),
                 (r"\w+\(", {"path": "src"}), ("print", {"path": "src/app.py"}), ("é", {}),
                 (r"end$", {}), ("(?<=def )slug", {})]


@needs_rg
@pytest.mark.parametrize("pattern,options", SAME_PATTERNS)
def test_ripgrep_and_python_give_the_same_results(ws, outside, pattern, options):
    (ws / "crlf.txt").write_bytes(b"the end\r\nx\r\n")
    (ws / "uni.txt").write_text("café\n")
    (ws / "blob.bin").write_bytes(b"slugify\x00x")
    (ws / "out").symlink_to(outside, target_is_directory=True)
    (ws / "src" / ".hidden.py").write_text("x = slugify\n")
    with_rg = FileTools(ws, rg=RG).search_files(pattern, **options)
    with_py = FileTools(ws, rg=None).search_files(pattern, **options)
    assert with_rg.data["backend"] == ("python" if "(?<=" in pattern else "ripgrep")
    assert with_py.data["backend"] == "python"
    assert (with_rg.content, with_rg.summary) == (with_py.content, with_py.summary)
    assert "secret" not in with_rg.content


@needs_rg
def test_ripgrep_result_in_detail(ws):
    (ws / "src" / "pkg" / "deep.py").write_text("slugify = None\n")
    found = search(ws, "slugify", rg=RG)
    assert found.backend == "ripgrep"
    assert [(m.path, m.line) for m in found.matches] == [("src/app.py", 1), ("src/app.py", 5), ("src/pkg/deep.py", 1)]


@pytest.mark.parametrize("pattern,path,expected", [
    ("*.py", "a/b/c.py", True), ("*.py", "c.pyc", False), ("src/*.py", "src/a.py", True),
    ("src/*.py", "src/x/a.py", False), ("src/**/*.py", "src/x/y/a.py", True), ("src/**/*.py", "src/a.py", True),
    ("**/test_*.py", "tests/test_a.py", True), ("**/test_*.py", "test_a.py", True), ("src/**", "src/a/b", True),
    ("*.{py,md}", "x/README.md", True), ("*.{py,md}", "x.rs", False), ("sub/*.py", "src/sub/a.py", False),
    ("?.txt", "a.txt", True), ("?.txt", "ab.txt", False), ("[!a]*.txt", "b.txt", True), ("[!a]*.txt", "a.txt", False),
    ("/src/*.py", "src/a.py", True), ("./src/*.py", "src/a.py", True),
])
def test_glob_rules_follow_ripgrep(pattern, path, expected):
    assert compile_glob(pattern)(path) is expected


def test_a_python_search_past_its_time_limit_says_it_was_stopped(ws):
    result = FileTools(ws, rg=None, search_time_s=0).search_files("slugify")
    assert result.content == ("No matches for 'slugify' in the workspace. "
                              "[the search was stopped by its time limit; search a subfolder]")


def test_a_ripgrep_that_hangs_is_killed_at_the_time_limit(ws, tmp_path):
    # a stand-in for a ripgrep stuck on a slow disk: the real one is too quick to catch in the act
    hung = tmp_path / "rg"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")
    hung.chmod(0o755)
    started = time.monotonic()
    found = search(ws, "slugify", rg=str(hung), time_limit_s=0.3)
    assert (found.backend, found.matches, found.stopped_early) == ("ripgrep", [], True)
    assert time.monotonic() - started < 10


def test_search_files_refuses_a_pipe_as_the_path(ft, ws):
    os.mkfifo(ws / "pipe")
    with pytest.raises(ToolError, match="'pipe' is not a regular file"):
        ft.search_files("x", path="pipe")


def test_a_ripgrep_that_cannot_run_leaves_the_search_to_python(ws, tmp_path):
    broken = tmp_path / "rg"
    broken.write_text("not a program")
    broken.chmod(0o644)
    found = search(ws, "slugify", rg=str(broken))
    assert found.backend == "python"
    assert [(m.path, m.line) for m in found.matches] == [("src/app.py", 1), ("src/app.py", 5)]


def test_ripgrep_results_that_now_go_through_a_symlink_out_are_dropped(ws, outside, tmp_path):
    # ripgrep walks by names: a folder swapped for a link mid-search could be read through. A
    # stand-in ripgrep reports such a hit (as the real one would after that race) beside a real one.
    (ws / "out").symlink_to(outside, target_is_directory=True)
    hits = [{"type": "match", "data": {"path": {"text": path}, "lines": {"text": text}, "line_number": 1,
                                       "submatches": []}}
            for path, text in (("./out/secret.txt", "slugify secret\n"), ("./src/app.py", "def slugify(text):\n"))]
    fake = tmp_path / "rg"
    fake.write_text("#!/bin/sh\ncat <<'END'\n" + "\n".join(json.dumps(h) for h in hits) + "\nEND\n")
    fake.chmod(0o755)
    found = search(ws, "slugify", rg=str(fake))
    assert [(m.path, m.line, m.text) for m in found.matches] == [("src/app.py", 1, "def slugify(text):")]


# --- read before write ---------------------------------------------------------------------------

def test_write_file_over_a_file_not_read_is_refused_and_the_file_kept(ft, ws):
    config = ws / "config.json"
    config.write_text('{"port": 8080, "debug": false}\n')
    with pytest.raises(ToolError, match=r"config.json exists and has not been read in this session") as caught:
        ft.write_file("config.json", '{"invented": true}\n')
    assert "call read_file on config.json first" in caught.value.hint
    assert config.read_text() == '{"port": 8080, "debug": false}\n'
    ft.read_file("config.json")  # the control: once read, the same call works
    assert ft.write_file("config.json", '{"port": 8081}\n').data["created"] is False
    assert config.read_text() == '{"port": 8081}\n'


def test_edit_file_of_a_file_not_read_is_refused_and_works_once_read(ft, ws):
    with pytest.raises(ToolError, match=r"src/app.py exists and has not been read in this session, so edit_file"):
        ft.edit_file("src/app.py", "text.lower()", "text.upper()")
    assert "lower" in (ws / "src" / "app.py").read_text()
    ft.read_file("src/app.py", start_line=1, end_line=2)  # a part is enough
    ft.edit_file("src/app.py", "text.lower()", "text.upper()")
    ft.edit_file("src/app.py", "text.upper()", "text.title()")  # its own edit keeps it read
    assert "text.title()" in (ws / "src" / "app.py").read_text()


def test_a_file_changed_since_it_was_read_must_be_read_again(ft, ws):
    ft.read_file("src/pkg/util.py")
    path = ws / "src" / "pkg" / "util.py"
    path.write_text("VALUE = 2  # changed by a command\n")
    os.utime(path, ns=(1, 1))  # a different modification time whatever the clock's resolution
    with pytest.raises(ToolError, match=r"src/pkg/util.py has changed since you last read it"):
        ft.write_file("src/pkg/util.py", "VALUE = 3\n")
    assert path.read_text() == "VALUE = 2  # changed by a command\n"
    ft.read_file("src/pkg/util.py")
    ft.write_file("src/pkg/util.py", "VALUE = 3\n")
    assert path.read_text() == "VALUE = 3\n"


def test_new_files_need_no_read(ft, ws):
    ft.write_file("fresh/new.py", "x = 1\n")
    assert (ws / "fresh" / "new.py").read_text() == "x = 1\n"
