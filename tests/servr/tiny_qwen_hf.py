"""The tiny random Qwen2 GGUF converted once to a Hugging Face folder (safetensors + tokenizer).

Transformers reads the GGUF with ``gguf_file=`` in about half a minute, nearly all of it building
the tokenizer, so the converted folder is kept in the temp dir under a name derived from the
GGUF's bytes and the Transformers version: later test runs on this machine load it in seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def _digest(path: Path) -> str:
    import transformers

    h = hashlib.sha256(transformers.__version__.encode())
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def hf_folder_from_gguf(gguf_path: Path, cache_root: Path | None = None) -> Path:
    """A Hugging Face folder with the same weights, tokenizer and chat template as ``gguf_path``."""
    root = cache_root or Path(tempfile.gettempdir())
    target = root / f"local-coder-{gguf_path.stem}-hf-{_digest(gguf_path)}"
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    building = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=root))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # the GGUF-loaded model is marked "quantized with gguf" and refuses to save: copy it into a plain one
        config = loaded.config
        del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(loaded.state_dict())
        plain.save_pretrained(str(building))
        tokenizer.save_pretrained(str(building))
        try:
            os.rename(building, target)  # atomic: a concurrent run sees the whole folder or none
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target
