"""The declarative profiles: ids, hub names and the published architecture numbers."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from model.profiles import DEFAULT_PROFILE_ID, PROFILES, default_profile, get_profile, profile_for_file, smaller_alternatives


def test_profile_ids_are_exactly_the_documented_set():
    sizes, quants = ("0.5b", "1.5b", "3b", "7b"), ("q4_k_m", "q5_k_m", "q6_k", "q8_0")
    expected = {f"qwen2.5-coder-{s}-instruct-{q}" for s in sizes for q in quants}
    expected |= {f"qwen2.5-coder-{s}-instruct" for s in sizes}
    assert {p.id for p in PROFILES} == expected
    assert len(PROFILES) == 20


def test_the_default_is_the_7b_q4_k_m_gguf():
    p = default_profile()
    assert p.id == DEFAULT_PROFILE_ID == "qwen2.5-coder-7b-instruct-q4_k_m"
    assert (p.format, p.repo) == ("gguf", "Qwen/Qwen2.5-Coder-7B-Instruct-GGUF")


def test_7b_architecture_is_the_published_config():
    a = get_profile("qwen2.5-coder-7b-instruct").arch
    # Qwen/Qwen2.5-Coder-7B-Instruct config.json
    assert (a.n_layers, a.hidden_size, a.n_heads, a.n_kv_heads, a.head_dim, a.intermediate_size, a.vocab_size,
            a.trained_ctx, a.tied_embeddings) == (28, 3584, 28, 4, 128, 18944, 152064, 32768, False)


@pytest.mark.parametrize("size,layers,hidden,heads,kv,head_dim", [
    ("0.5b", 24, 896, 14, 2, 64), ("1.5b", 28, 1536, 12, 2, 128), ("3b", 36, 2048, 16, 2, 128)])
def test_small_models_architecture(size, layers, hidden, heads, kv, head_dim):
    a = get_profile(f"qwen2.5-coder-{size}-instruct").arch
    assert (a.n_layers, a.hidden_size, a.n_heads, a.n_kv_heads, a.head_dim, a.vocab_size, a.tied_embeddings) == \
        (layers, hidden, heads, kv, head_dim, 151936, True)
    assert a.head_dim * a.n_heads == a.hidden_size


def test_file_names_follow_the_hub_and_split_sets_list_every_part():
    assert get_profile("qwen2.5-coder-3b-instruct-q8_0").files == ("qwen2.5-coder-3b-instruct-q8_0.gguf",)
    assert get_profile("qwen2.5-coder-7b-instruct-q8_0").files == tuple(
        f"qwen2.5-coder-7b-instruct-q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3))
    hf = get_profile("qwen2.5-coder-1.5b-instruct")
    assert (hf.format, hf.quant, hf.repo, hf.local_name) == ("hf", "bf16", "Qwen/Qwen2.5-Coder-1.5B-Instruct",
                                                             "Qwen2.5-Coder-1.5B-Instruct")


def test_sizes_grow_with_the_quantization():
    for size in ("0.5b", "1.5b", "3b", "7b"):
        sizes = [get_profile(f"qwen2.5-coder-{size}-instruct-{q}").size_bytes for q in ("q4_k_m", "q5_k_m", "q6_k", "q8_0")]
        assert sizes == sorted(sizes)
    assert get_profile("qwen2.5-coder-7b-instruct-q4_k_m").size_bytes == 4_680_000_000


def test_unknown_profile_names_the_setting_and_the_known_ids():
    with pytest.raises(ConfigError) as err:
        get_profile("qwen2.5-coder-14b-instruct-q4_k_m")
    assert "AGENT_PROFILE" in str(err.value) and DEFAULT_PROFILE_ID in str(err.value)
    assert get_profile("  QWEN2.5-Coder-7B-Instruct-Q4_K_M ").id == DEFAULT_PROFILE_ID


def test_profile_for_file_knows_first_parts_merged_files_and_folders():
    assert profile_for_file("qwen2.5-coder-7b-instruct-q4_k_m-00001-of-00002.gguf").id == DEFAULT_PROFILE_ID
    assert profile_for_file("qwen2.5-coder-7b-instruct-q4_k_m.gguf").id == DEFAULT_PROFILE_ID
    assert profile_for_file("Qwen2.5-Coder-3B-Instruct").id == "qwen2.5-coder-3b-instruct"
    assert profile_for_file("SmolLM2-135M-Instruct.Q4_1.gguf") is None


def test_smaller_alternatives_try_the_same_model_first_then_smaller_models():
    alts = [p.id for p in smaller_alternatives(get_profile("qwen2.5-coder-7b-instruct-q8_0"))]
    assert alts[:3] == ["qwen2.5-coder-7b-instruct-q6_k", "qwen2.5-coder-7b-instruct-q5_k_m",
                        "qwen2.5-coder-7b-instruct-q4_k_m"]
    assert alts[3] == "qwen2.5-coder-3b-instruct-q8_0"
    assert alts[-1] == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert smaller_alternatives(get_profile("qwen2.5-coder-0.5b-instruct-q4_k_m")) == []
