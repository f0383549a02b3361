"""Prompt progress: the gateway asks only servers that take ``return_progress`` and turns their chunks into events."""

from __future__ import annotations

from core.gateway import StreamEvent
from core.messages import Message
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
