"""Build a tiny random-weight Qwen2 GGUF with the real Qwen2.5 tokenizer and tool-calling template.

The vocabulary comes from ``../shared/fixtures/ggml-vocab-qwen2.gguf``; its padding slots
151646-151664 get Qwen2.5's added tokens (``<tool_call>``, ``<|fim_prefix|>``…) at their real
ids, as a Qwen2.5-Coder-Instruct GGUF carries them. Weights are random (2 layers, hidden 64), so
the output is noise, but tokenizer, special tokens, template and architecture are Qwen's.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures"
VOCAB = "ggml-vocab-qwen2.gguf"
TEMPLATE = "qwen2.5-instruct.jinja"

# Qwen2.5's added tokens: id -> (text, token type); 3 = control, 4 = user-defined (plain text in output)
ADDED_TOKENS = {
    151646: "<|object_ref_start|>", 151647: "<|object_ref_end|>", 151648: "<|box_start|>", 151649: "<|box_end|>",
    151650: "<|quad_start|>", 151651: "<|quad_end|>", 151652: "<|vision_start|>", 151653: "<|vision_end|>",
    151654: "<|vision_pad|>", 151655: "<|image_pad|>", 151656: "<|video_pad|>", 151657: "<tool_call>",
    151658: "</tool_call>", 151659: "<|fim_prefix|>", 151660: "<|fim_middle|>", 151661: "<|fim_suffix|>",
    151662: "<|fim_pad|>", 151663: "<|repo_name|>", 151664: "<|file_sep|>",
}
USER_DEFINED = {151657, 151658}
IM_END = 151645
ENDOFTEXT = 151643

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, CONTEXT = 64, 2, 4, 2, 128, 32768


def fixtures_missing() -> str | None:
    """Why the tiny model cannot be built here, or ``None`` when it can."""
    for name in (VOCAB, TEMPLATE):
        if not (FIXTURES / name).is_file():
            return f"test fixture {FIXTURES / name} is missing (the shared/ folder beside the repository)"
    return None


def _field(reader: gguf.GGUFReader, key: str) -> list:
    f = reader.fields[key]
    return [f.parts[i] for i in f.data]


def build_tiny_qwen_gguf(dest_dir: Path, *, seed: int = 0) -> Path:
    """Write ``tiny-qwen2.5-instruct.gguf`` into ``dest_dir`` and return its path."""
    reason = fixtures_missing()
    if reason:
        raise FileNotFoundError(reason)
    reader = gguf.GGUFReader(str(FIXTURES / VOCAB))
    tokens = [bytes(p).decode("utf-8") for p in _field(reader, "tokenizer.ggml.tokens")]
    types = [int(p[0]) for p in _field(reader, "tokenizer.ggml.token_type")]
    merges = [bytes(p).decode("utf-8") for p in _field(reader, "tokenizer.ggml.merges")]
    for idx, text in ADDED_TOKENS.items():
        tokens[idx] = text
        types[idx] = 4 if idx in USER_DEFINED else 3
    n_vocab = len(tokens)

    path = Path(dest_dir) / "tiny-qwen2.5-instruct.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-qwen2.5-instruct")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_block_count(LAYERS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ENDOFTEXT)
    w.add_eos_token_id(IM_END)
    w.add_pad_token_id(ENDOFTEXT)
    w.add_add_bos_token(False)
    w.add_chat_template((FIXTURES / TEMPLATE).read_text(encoding="utf-8"))

    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    def vec(n: int, value: float | None = None) -> np.ndarray:
        if value is not None:
            return np.full(n, value, dtype=np.float32)
        return (rng.standard_normal(n) * 0.02).astype(np.float32)

    kv = HIDDEN // HEADS * KV_HEADS
    w.add_tensor("token_embd.weight", mat(n_vocab, HIDDEN))
    for i in range(LAYERS):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", vec(HIDDEN, 1.0))
        w.add_tensor(b + "attn_q.weight", mat(HIDDEN, HIDDEN))
        w.add_tensor(b + "attn_q.bias", vec(HIDDEN))
        w.add_tensor(b + "attn_k.weight", mat(kv, HIDDEN))
        w.add_tensor(b + "attn_k.bias", vec(kv))
        w.add_tensor(b + "attn_v.weight", mat(kv, HIDDEN))
        w.add_tensor(b + "attn_v.bias", vec(kv))
        w.add_tensor(b + "attn_output.weight", mat(HIDDEN, HIDDEN))
        w.add_tensor(b + "ffn_norm.weight", vec(HIDDEN, 1.0))
        w.add_tensor(b + "ffn_gate.weight", mat(FFN, HIDDEN))
        w.add_tensor(b + "ffn_up.weight", mat(FFN, HIDDEN))
        w.add_tensor(b + "ffn_down.weight", mat(HIDDEN, FFN))
    w.add_tensor("output_norm.weight", vec(HIDDEN, 1.0))
    w.add_tensor("output.weight", mat(n_vocab, HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
