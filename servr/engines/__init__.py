"""Engines behind the server, chosen by ``settings.backend``; a backend's module is imported only when chosen."""

from __future__ import annotations

from pathlib import Path

from boot.settings import Settings
from core.errors import ConfigError, ModelNotFound
from servr.engines.base import Engine, model_id_from_path
from servr.engines.cpu import physical_cores

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
    if settings.backend == "transformers" or model_path.is_dir():
        return "transformers"
    raise ConfigError(f"cannot tell which backend serves {model_path.name}",
                      hint="pass a .gguf file or a Hugging Face model folder (config.json + *.safetensors), "
                           "or set AGENT_BACKEND")


def served_model_id(settings: Settings, model_path: Path) -> str:
    """The id clients use: ``AGENT_MODEL``, or one derived from the file name."""
    return settings.model or model_id_from_path(model_path)


def load_engine(settings: Settings, model_path: Path) -> Engine:
    """Load the model at ``model_path`` with the backend the settings pick."""
    backend = pick_backend(settings, model_path)
    model_id = served_model_id(settings, model_path)
    threads = settings.threads or physical_cores()  # AGENT_THREADS unset: one per physical core
    if backend == "transformers":
        from servr.engines.transformers import TransformersEngine  # torch and transformers load only here

        return TransformersEngine(model_path, model_id=model_id, n_ctx=settings.ctx, n_threads=threads,
                                  load_in_4bit=_needs_4bit(settings, model_path))
    from servr.engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(model_path, model_id=model_id, n_ctx=settings.ctx,
                          n_threads=threads, n_gpu_layers=settings.n_gpu_layers)


def _needs_4bit(settings: Settings, model_path: Path) -> bool:
    """Whether the memory plan loads these weights in 4-bit: only on a GPU, when bf16 does not fit AGENT_VRAM_GB."""
    import torch

    from model.inspect import inspect_weights
    from servr.planner import detect_gpu, plan_memory

    gpu = detect_gpu()
    if gpu is None or not torch.cuda.is_available():  # a CPU-only torch runs on the CPU in float32
        return False
    plan = plan_memory(inspect_weights(model_path), backend="transformers", vram_gb=settings.vram_gb,
                       ctx=settings.ctx, gpu=gpu, suggest=False)
    return plan.load_in_4bit
