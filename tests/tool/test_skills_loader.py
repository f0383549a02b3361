"""Hot-loading: files dropped, changed and deleted by hand; bad files reported once; relevance."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from store.embed import default_model_path, SentenceTransformerEmbedder
from core.errors import ModelNotFound

from skills_helpers import Setup, WordEmbedder, require_bwrap, skill_source, write


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    require_bwrap()
    return Setup(tmp_path / "ws")


def bump(path: Path) -> None:
    """Make sure a rewrite is seen even on a file system with coarse timestamps."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_file_dropped_by_hand_is_offered_on_the_next_call_and_announced(setup: Setup):
    assert setup.names() == ["promote_skill"]
    write(setup.skills / "double.py", skill_source("double", "return x * 2", params="x: int"))
    assert setup.names() == ["promote_skill", "double"]
    assert setup.notices == ["skill double loaded"]
    tool = next(t for t in setup.registry.tools() if t.name == "double")
    assert tool.source == "skill" and tool.description == "Add two numbers."
    assert setup.call("double", x=21).content == "42"


def test_a_changed_file_has_its_new_behaviour_on_the_next_call(setup: Setup):
    path = write(setup.skills / "double.py", skill_source("double", "return x * 2", params="x: int"))
    assert setup.call("double", x=5).content == "10"
    write(path, skill_source("double", "return x * 3", params="x: int"))
    bump(path)
    assert setup.call("double", x=5).content == "15"
    assert "skill double reloaded (the file changed)" in setup.notices


def test_a_deleted_file_is_no_longer_offered(setup: Setup):
    path = write(setup.skills / "double.py", skill_source("double", "return x * 2", params="x: int"))
    assert "double" in setup.names()
    path.unlink()
    assert "double" not in setup.names()
    result = setup.call("double", x=1)
    assert not result.ok and "there is no tool named 'double'" in result.content
    assert "skill double removed (its file is gone)" in setup.notices


def test_a_bad_file_is_reported_once_not_loaded_and_the_others_still_work(setup: Setup, caplog):
    write(setup.skills / "good.py", skill_source("good", "return x", params="x: int"))
    write(setup.skills / "broken.py", "def broken(x: int) -> int:\n    return (\n")
    for _ in range(3):
        assert setup.names() == ["promote_skill", "good"]
    reports = [n for n in setup.notices if "broken.py" in n]
    assert reports == ["skill file skills/broken.py is not loaded: the file does not parse: line 2: "
                       "'(' was never closed (fix the syntax error)"]
    assert setup.call("good", x=7).content == "7"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == reports


def test_a_skills_path_that_is_a_file_offers_nothing_and_raises_nothing(setup: Setup):
    write(setup.root / "skills", "not a folder")
    assert setup.names() == ["promote_skill"]


def test_a_bad_file_is_reported_again_once_it_changes_and_loads_once_fixed(setup: Setup):
    path = write(setup.skills / "late.py", skill_source("late", "return x", params="x"))
    setup.names()
    write(path, skill_source("late", "return x", params="x: int", args_doc=""))
    bump(path)
    setup.names()
    assert [n.split(": ", 1)[1] for n in setup.notices if "late.py" in n] == [
        "parameter 'x' of late has no type hint (write e.g. `x: str`)",
        "the docstring of late does not describe 'x' in its Args: section (add an 'Args:' section with one line per parameter, e.g.\n    Args:\n        x: what it is and its unit)"]
    write(path, skill_source("late", "return x", params="x: int"))
    bump(path)
    assert "late" in setup.names()


def test_a_file_named_like_a_builtin_tool_is_not_loaded(setup: Setup):
    write(setup.skills / "shell.py", skill_source("shell", "return x", params="x: int"))
    assert setup.names() == ["promote_skill"]
    assert any("skills/shell.py is not loaded" in n and "built-in" in n for n in setup.notices)


def test_a_file_whose_name_is_not_a_tool_name_is_not_loaded(setup: Setup):
    write(setup.skills / "Bad-Name.py", skill_source("Bad", "return x", params="x: int"))
    assert setup.names() == ["promote_skill"]
    assert any("Bad-Name.py is not loaded" in n and "lower_snake_case" in n for n in setup.notices)


def test_a_symlinked_skill_file_is_not_loaded(setup: Setup, tmp_path: Path):
    target = write(tmp_path / "elsewhere.py", skill_source("linked", "return x", params="x: int"))
    setup.skills.mkdir(parents=True)
    (setup.skills / "linked.py").symlink_to(target)
    assert setup.names() == ["promote_skill"]
    assert any("linked.py is not loaded: it is not a regular file" in n for n in setup.notices)


def test_a_missing_skills_folder_offers_nothing_and_raises_nothing(setup: Setup):
    assert not setup.skills.exists()
    assert setup.names() == ["promote_skill"] and setup.notices == []


def test_a_scan_of_200_unchanged_skills_reads_no_file_again(setup: Setup):
    for i in range(200):
        write(setup.skills / f"s{i:03d}.py", skill_source(f"s{i:03d}", "return x", params="x: int"))
    first = {s.name: s for s in setup.loader.scan()}
    again = {s.name: s for s in setup.loader.scan()}
    assert len(again) == 200 and all(again[n] is first[n] for n in first)


def test_many_skills_offer_only_the_nearest_to_the_task(tmp_path: Path):
    require_bwrap()
    vocabulary = ["csv", "date", "json", "image", "word", "column", "parse", "resize"]
    embedder = WordEmbedder(vocabulary)
    setup = Setup(tmp_path / "ws", embedder=lambda: embedder, max_offered=2)
    topics = {"csv_columns": "Read the column names of a csv file.", "parse_date": "Parse a date string.",
              "json_keys": "List the keys of a json object.", "resize_image": "Resize an image.",
              "count_word": "Count each word.", "csv_rows": "Count the rows of a csv file."}
    for name, summary in topics.items():
        write(setup.skills / f"{name}.py", skill_source(name, "return x", params="x: int", summary=summary))
    offered = setup.names(task="which csv column holds the totals?")
    assert offered == ["promote_skill", "csv_columns", "csv_rows"]
    # one match, then the tie at zero broken by name; offered in the folder's (name) order
    assert setup.names(task="resize this image please")[1:] == ["count_word", "resize_image"]
    calls = embedder.calls
    setup.names(task="resize this image please")
    assert embedder.calls == calls  # descriptions and the task are embedded once


def test_without_an_embedder_the_most_recently_used_skills_are_offered(tmp_path: Path):
    require_bwrap()

    def broken():
        raise ModelNotFound("no model here")

    setup = Setup(tmp_path / "ws", embedder=broken, max_offered=2)
    for name in ("alpha", "beta", "gamma"):
        write(setup.skills / f"{name}.py", skill_source(name, "return x", params="x: int"))
    old = time.time() - 100
    for i, name in enumerate(("alpha", "beta", "gamma")):
        os.utime(setup.skills / f"{name}.py", (old + i, old + i))
    assert setup.names(task="anything")[1:] == ["beta", "gamma"]  # newest files first while none was used
    alpha = next(s.tool for s in setup.loader.scan() if s.name == "alpha")  # not offered now; run it directly
    assert alpha.fn(x=1).content == "1"
    assert setup.names(task="anything")[1:] == ["alpha", "gamma"]
    assert [n for n in setup.notices if "embedder" in n] == [
        "skills: cannot make the embedder (no model here); offering the 2 most recently used skills instead"]


def test_the_embedder_loads_in_the_background_and_recent_skills_are_offered_meanwhile(tmp_path: Path):
    require_bwrap()
    release = threading.Event()
    embedder = WordEmbedder(["csv", "image", "date"])

    def slow():
        assert release.wait(30)
        return embedder

    setup = Setup(tmp_path / "ws", embedder=slow, max_offered=1, background=True)
    for name, summary in {"csv_rows": "Count csv rows.", "parse_date": "Parse a date.",
                          "resize_image": "Resize an image."}.items():
        write(setup.skills / f"{name}.py", skill_source(name, "return x", params="x: int", summary=summary))
    old = time.time() - 100
    for i, name in enumerate(("csv_rows", "parse_date", "resize_image")):
        os.utime(setup.skills / f"{name}.py", (old + i, old + i))
    assert setup.names(task="shrink this image") == ["promote_skill", "resize_image"]  # newest, not ranked yet
    assert setup.names(task="rows of the csv") == ["promote_skill", "resize_image"]  # does not wait for the model
    release.set()
    assert setup.loader.relevance.wait_ready(30)
    assert setup.names(task="rows of the csv") == ["promote_skill", "csv_rows"]
    assert setup.notices == []


def test_few_skills_are_all_offered_without_loading_an_embedder(tmp_path: Path):
    require_bwrap()
    made = []
    setup = Setup(tmp_path / "ws", embedder=lambda: made.append(1), max_offered=8)
    write(setup.skills / "one.py", skill_source("one", "return x", params="x: int"))
    assert setup.names(task="anything") == ["promote_skill", "one"] and made == []


@pytest.mark.slow
def test_the_bundled_minilm_embedder_ranks_skills_by_meaning(tmp_path: Path):
    require_bwrap()
    try:
        default_model_path()
    except ModelNotFound as exc:
        pytest.skip(f"the bundled embedding model is not installed: {exc}")
    setup = Setup(tmp_path / "ws", embedder=SentenceTransformerEmbedder, max_offered=1)
    topics = {"weather_report": "Fetch the weather forecast for a city.",
              "sum_invoice": "Add up the amounts of an invoice.",
              "rename_photos": "Rename photo files by the date they were taken."}
    for name, summary in topics.items():
        write(setup.skills / f"{name}.py", skill_source(name, "return x", params="x: int", summary=summary))
    assert setup.names(task="will it rain in Paris tomorrow?")[1:] == ["weather_report"]
    assert setup.names(task="what is the total of this bill?")[1:] == ["sum_invoice"]
