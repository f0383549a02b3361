"""Engines behind the server, chosen by ``settings.backend``; a backend's module is imported only when chosen."""

from __future__ import annotations

from pathlib import Path

from boot.settings import Settings
from core.errors import ConfigError, ModelNotFound
from servr.engines.base import Engine, model_id_from_path

__all__ = ["Engine", "load_engine", "pick_backend", "served_model_id"]


def pick_backend(settings: Settings, model_path: Path) -> str:
    """``llamacpp`` or ``transformers`` for this model path, or a :class:`ConfigError` saying what to do."""
    if not model_path.exists():
        raise ModelNotFound(f"model not found: {model_path}", hint="check AGENT_MODEL_PATH / --model")
    is_gguf = model_path.is_file() and model_path.suffix.lower() == ".gguf"
    if settings.backend == "llamacpp" or (settings.backend == "auto" and is_gguf):
        if not is_gguf:
            raise ConfigError(f"bad setting AGENT_BACKEND (got 'llamacpp'): {model_path} is not a .gguf file",
                              hint="the llama.cpp backend serves GGUF files; pass --model path/to/model.gguf")
        return "llamacpp"
    if settings.backend == "transformers":
        return "transformers"
    if model_path.is_dir():
        raise ConfigError(f"{model_path} is a folder (Hugging Face format), and this build serves GGUF files only",
                          hint="pass --model path/to/model.gguf, or run 'bash runsv.sh' to download the default GGUF")
    raise ConfigError(f"cannot tell which backend serves {model_path.name}",
                      hint="pass a .gguf file, or set AGENT_BACKEND=llamacpp")


def served_model_id(settings: Settings, model_path: Path) -> str:
    """The id clients use: ``AGENT_MODEL``, or one derived from the file name."""
    return settings.model or model_id_from_path(model_path)


def load_engine(settings: Settings, model_path: Path) -> Engine:
    """Load the model at ``model_path`` with the backend the settings pick."""
    backend = pick_backend(settings, model_path)
    if backend == "transformers":
        raise ConfigError("bad setting AGENT_BACKEND (got 'transformers'): the Transformers backend is not part of this build",
                          hint="serve a GGUF file with AGENT_BACKEND=llamacpp or auto")
    from servr.engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(model_path, model_id=served_model_id(settings, model_path), n_ctx=settings.ctx,
                          n_threads=settings.threads, n_gpu_layers=settings.n_gpu_layers)
