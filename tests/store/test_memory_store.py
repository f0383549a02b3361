"""MemoryStore with the real all-MiniLM-L6-v2 model: recall by meaning and by words, dedup, forget, filters."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from store.memory import BadMemoryInput, MemoryNotFound, MemoryStore, RecallSection, fts_query

# (kind, text): a small workspace's worth of memories on different subjects
MEMORIES = [
    ("lesson", "Run the test suite with `pytest -x -q` from the repository root; running it from tests/ breaks imports."),
    ("preference", "The person wants four-space indentation and double quotes in Python code."),
    ("fact", "The staging database is PostgreSQL 15 on port 5433, not the default port."),
    ("lesson", "Docker builds fail on this machine unless BuildKit is disabled with DOCKER_BUILDKIT=0."),
    ("fact", "Deployments go through the GitHub Actions workflow deploy.yml; never push to production by hand."),
    ("preference", "Commit messages must be written in the imperative mood and stay under 72 characters."),
    ("lesson", "The CSV exports use semicolons as separators, so pandas needs sep=';' to read them."),
    ("fact", "The API rate limit is 100 requests per minute per key; the client retries after a 429."),
    ("snippet", "Start the dev server with `uvicorn app.main:app --reload --port 8080`."),
    ("lesson", "Memory leaks in the worker came from a global cache that was never cleared between jobs."),
    ("fact", "Frontend assets are compiled by Vite and end up in the dist/ folder."),
    ("preference", "Explanations should be short; the person dislikes long preambles."),
]

# paraphrased questions (few shared words) -> index in MEMORIES of the memory that answers them
PARAPHRASES = [
    ("how do I execute the unit tests?", 0),
    ("code formatting style the user likes for python", 1),
    ("which port does the staging postgres listen on", 2),
    ("container image build keeps failing", 3),
    ("how are releases shipped to prod", 4),
    ("how should I word git commit messages", 5),
    ("reading the exported spreadsheet files with pandas fails", 6),
    ("too many requests error from the API", 7),
    ("command to launch the local web server", 8),
    ("why did the background job use more and more RAM", 9),
    ("where do the built javascript bundles go", 10),
    ("how verbose should my answers be", 11),
]


@pytest.fixture
def filled(memstore: MemoryStore) -> tuple[MemoryStore, list[int]]:
    from store.memory import MemoryInput

    results = memstore.add_many([MemoryInput(text, kind) for kind, text in MEMORIES])
    assert [r.action for r in results] == ["added"] * len(MEMORIES)
    return memstore, [r.memory.id for r in results]


@pytest.mark.slow
def test_paraphrased_queries_find_the_right_memory_in_the_top_3(filled: tuple[MemoryStore, list[int]]) -> None:
    store, ids = filled
    misses = []
    for query, expected in PARAPHRASES:
        top = [hit.memory.id for hit in store.search(query, k=3)]
        if ids[expected] not in top:
            misses.append((query, MEMORIES[expected][1], [store.get(i).text for i in top]))
    assert misses == []


@pytest.mark.slow
def test_an_identifier_is_found_by_its_exact_words(memstore: MemoryStore) -> None:
    memstore.add("The proxy answers ERR_CONN_4411 when the VPN is down; reconnect the VPN first.", "lesson")
    memstore.add("The proxy answers ERR_CONN_4412 when the certificate has expired.", "lesson")
    memstore.add("Network errors from the proxy usually mean the office VPN dropped.", "fact")
    memstore.add("Connection problems with the proxy are logged in /var/log/proxy.log.", "fact")
    hits = memstore.search("ERR_CONN_4411", k=3)
    assert "ERR_CONN_4411" in hits[0].memory.text
    assert hits[0].keyword is True
    assert [h.keyword for h in hits[1:]] == [False, False]  # 4412 is a different phrase


def test_fts_query_quotes_every_piece_so_no_input_is_fts5_syntax() -> None:
    assert fts_query("ERR_CONN_4411") == '"ERR CONN 4411"'
    assert fts_query('fix "the NEAR(a b) col:val* AND') == '"fix" OR "NEAR a" OR "b" OR "col val"'
    assert fts_query("how do I") == '"how" OR "do" OR "I"'
    assert fts_query("*** -- ''") is None


@pytest.mark.slow
@pytest.mark.parametrize("query", ['"unbalanced', "NEAR(a b)", "col:value", "*", "AND OR NOT", "a - b", "^start",
                                   "{x y}", "Ünïcödé straße"])
def test_search_accepts_any_text_as_a_query(memstore: MemoryStore, query: str) -> None:
    memstore.add("Straße names keep their ß in the address table.", "fact")
    assert len(memstore.search(query, k=1)) == 1


@pytest.mark.slow
def test_an_exact_duplicate_is_not_stored_twice_and_its_tags_are_merged(memstore: MemoryStore) -> None:
    first = memstore.add("Use ruff for linting.", "preference", ["python"])
    again = memstore.add("  Use   ruff for\nlinting. ", "preference", ["lint"])
    assert (first.action, again.action) == ("added", "duplicate")
    assert again.memory.id == first.memory.id
    assert again.memory.tags == ("lint", "python")
    assert memstore.count() == 1


@pytest.mark.slow
def test_a_near_duplicate_of_the_same_kind_updates_the_existing_memory(memstore: MemoryStore) -> None:
    old = memstore.add("The integration tests need Redis running on localhost.", "lesson", ["tests"])
    new = memstore.add("The integration tests need Redis running on localhost first.", "lesson", ["redis"])
    assert new.action == "updated"
    assert new.memory.id == old.memory.id
    assert new.previous_text == "The integration tests need Redis running on localhost."
    assert new.similarity is not None and new.similarity >= 0.92
    assert memstore.get(old.memory.id).text == "The integration tests need Redis running on localhost first."
    assert memstore.get(old.memory.id).tags == ("redis", "tests")
    assert memstore.count() == 1
    # the index holds the new text's vector under the same id, once
    assert memstore.check()["vectors"] == 1
    other_kind = memstore.add("The integration tests need Redis running on localhost first!", "fact")
    assert other_kind.action == "added"


@pytest.mark.slow
def test_a_near_duplicate_within_one_batch_updates_the_earlier_one(memstore: MemoryStore) -> None:
    from store.memory import MemoryInput

    results = memstore.add_many([MemoryInput("Always pin numpy below 2.0 in this project.", "lesson"),
                                 MemoryInput("Always pin numpy below 2.0 in this project!!", "lesson")])
    assert [r.action for r in results] == ["added", "updated"]
    assert results[1].memory.id == results[0].memory.id
    assert memstore.count() == 1


@pytest.mark.slow
def test_forget_hides_a_memory_and_its_id_is_never_reused(memstore: MemoryStore) -> None:
    a = memstore.add("Alpha service owns the billing tables.", "fact").memory
    b = memstore.add("Beta jobs run at midnight UTC.", "fact").memory
    assert memstore.forget(b.id).text == b.text
    assert [h.memory.id for h in memstore.search("when do beta jobs run", k=5)] == [a.id]
    assert [m.id for m in memstore.list()] == [a.id]
    with pytest.raises(MemoryNotFound):
        memstore.get(b.id)
    with pytest.raises(MemoryNotFound, match=f"no memory with id {b.id}"):
        memstore.forget(b.id)
    c = memstore.add("Beta jobs run at midnight UTC.", "fact").memory  # the same text again: a new memory
    assert c.id == b.id + 1
    with sqlite3.connect(memstore.path) as db:
        actions = [r[0] for r in db.execute("SELECT action FROM memory_history WHERE memory_id = ? ORDER BY seq", (b.id,))]
    assert actions == ["add", "forget"]


@pytest.mark.slow
def test_search_and_list_filter_by_kind_and_tags(memstore: MemoryStore) -> None:
    memstore.add("Python tests use pytest fixtures for temporary folders.", "lesson", ["python", "tests"])
    memstore.add("Python code is formatted with black.", "preference", ["python"])
    memstore.add("The JavaScript tests run with vitest.", "lesson", ["js", "tests"])
    lessons = memstore.search("tests", k=10, kind="lesson")
    assert sorted(h.memory.text for h in lessons) == ["Python tests use pytest fixtures for temporary folders.",
                                                      "The JavaScript tests run with vitest."]
    both = memstore.search("tests", k=10, tags=["python", "tests"])
    assert [h.memory.text for h in both] == ["Python tests use pytest fixtures for temporary folders."]
    assert [m.text for m in memstore.list(kind="preference")] == ["Python code is formatted with black."]
    assert [m.text for m in memstore.list(tag="js")] == ["The JavaScript tests run with vitest."]
    assert memstore.search("tests", k=10, tags=["nothing-has-this"]) == []
    assert [m.text for m in memstore.list(n=1)] == ["The JavaScript tests run with vitest."]


@pytest.mark.slow
def test_bad_inputs_raise_errors_that_say_what_to_do(memstore: MemoryStore) -> None:
    with pytest.raises(BadMemoryInput, match="needs some text"):
        memstore.add("   ", "fact")
    with pytest.raises(BadMemoryInput, match="unknown kind 'opinion'") as info:
        memstore.add("x", "opinion")
    assert info.value.hint == "use one of: fact, lesson, preference, snippet"
    with pytest.raises(BadMemoryInput, match="bad tag"):
        memstore.add("x", "fact", ["no,commas here?"])
    with pytest.raises(BadMemoryInput, match="k must be between 1 and 100"):
        memstore.search("x", k=0)
    with pytest.raises(BadMemoryInput, match="a memory id is a number"):
        memstore.forget("seven")  # type: ignore[arg-type]
    assert memstore.count() == 0


@pytest.mark.slow
def test_recall_fits_the_budget_and_puts_the_relevant_memory_first(filled: tuple[MemoryStore, list[int]]) -> None:
    store, ids = filled
    text = store.recall("fix the failing unit tests", budget_tokens=60)
    assert 0 < math.ceil(len(text) / 4) <= 60
    lines = text.splitlines()
    assert lines[1] == f"- [lesson #{ids[0]}] {MEMORIES[0][1]}"
    words = lambda s: len(s.split())  # noqa: E731  a counter given by the caller is the one used
    counted = store.recall("fix the failing unit tests", budget_tokens=45, count_tokens=words)
    assert 0 < words(counted) <= 45
    assert store.recall("fix the failing unit tests", budget_tokens=5) == ""  # not even the header fits
    assert store.get(ids[0]).last_used is not None


@pytest.mark.slow
def test_recall_leaves_out_memories_unrelated_to_the_task(filled: tuple[MemoryStore, list[int]]) -> None:
    store, _ = filled
    assert store.recall("bake a sourdough bread with a crispy crust", budget_tokens=400) == ""


@pytest.mark.slow
def test_recall_section_asks_the_store_once_per_task(filled: tuple[MemoryStore, list[int]]) -> None:
    store, ids = filled
    section = RecallSection(store, 200)
    first = section("how do I execute the unit tests?", "s1")
    used = store.get(ids[0]).last_used
    assert section("how do I execute the unit tests?", "s1") == first
    assert store.get(ids[0]).last_used == used
    assert f"#{ids[0]}]" in first


@pytest.mark.slow
def test_export_then_import_into_a_new_store_keeps_text_kind_tags_and_dates(
        filled: tuple[MemoryStore, list[int]], tmp_path, minilm) -> None:
    store, ids = filled
    store.add("Tagged memory for the round trip.", "snippet", ["round-trip"])
    path = tmp_path / "memories.jsonl"
    assert store.export(path) == len(MEMORIES) + 1
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[-1]["tags"] == ["round-trip"]
    with MemoryStore(tmp_path / "other.db", minilm, progress=False) as other:
        summary = other.import_(path)
        assert (summary.added, summary.updated, summary.duplicates) == (len(MEMORIES) + 1, 0, 0)
        copied = {m.text: m for m in other.list(n=100)}
        for original in store.list(n=100):
            twin = copied[original.text]
            assert (twin.kind, twin.tags, twin.created, twin.updated) == \
                   (original.kind, original.tags, original.created, original.updated)
        again = other.import_(path)
        assert (again.added, again.duplicates) == (0, len(MEMORIES) + 1)


@pytest.mark.slow
def test_import_checks_every_line_before_adding_anything(memstore: MemoryStore, tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "kind": "fact"}\n\n{"text": "bad kind", "kind": "rumour"}\n')
    with pytest.raises(BadMemoryInput, match="bad.jsonl, line 3: unknown kind 'rumour'"):
        memstore.import_(path)
    assert memstore.count() == 0


def test_loading_the_embedder_prints_no_progress_bar_even_after_transformers_was_imported():
    import subprocess
    import sys

    script = ("import transformers\n"  # imported first, progress bars on: as in a long session
              "from store.embed import SentenceTransformerEmbedder\n"
              "SentenceTransformerEmbedder().embed(['hello'])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and "it/s" not in done.stderr
