"""The memory planner (servr/planner.py) against the published numbers of the profiles."""

from __future__ import annotations

import pytest

from model.inspect import layout_from_profile
from model.profiles import get_profile
from servr.planner import GiB, MIN_CTX, GpuInfo, plan_memory

Q4 = "qwen2.5-coder-7b-instruct-q4_k_m"
Q8 = "qwen2.5-coder-7b-instruct-q8_0"


def plan(profile_id: str, **kw):
    p = get_profile(profile_id)
    return plan_memory(layout_from_profile(p), profile=p, **kw)


def test_7b_q4_k_m_plans_the_full_trained_context_on_8_gb():
    result = plan(Q4, vram_gb=8)
    assert result.fits is True
    assert result.n_ctx == 32768
    assert (result.n_gpu_layers, result.n_layers, result.output_on_gpu) == (28, 28, True)
    # 28 layers × 4 KV heads × 128 head dim × 2 (K, V) × 2 bytes (f16)
    assert result.kv_bytes_per_token == 28 * 4 * 128 * 2 * 2 == 57344
    assert result.kv_bytes == 57344 * 32768
    assert result.total_bytes == result.weights_bytes + result.kv_bytes + result.reserve_bytes
    assert result.total_bytes <= 8 * GiB
    assert result.suggestion is None


def test_7b_q8_0_is_refused_on_8_gb_with_a_smaller_quantization_suggested():
    result = plan(Q8, vram_gb=8)
    assert result.fits is False
    assert result.suggestion is not None
    assert "--profile qwen2.5-coder-7b-instruct-q6_k" in result.suggestion
    assert "AGENT_N_GPU_LAYERS=" in result.suggestion


def test_q8_0_kv_cache_costs_34_bytes_per_32_values():
    result = plan(Q4, vram_gb=8, kv_cache_type="q8_0")
    assert result.kv_bytes_per_token == 28 * 4 * 128 * 2 * 34 // 32 == 30464
    assert result.kv_cache_type == "q8_0"


def test_agent_ctx_caps_the_context():
    assert plan(Q4, vram_gb=8, ctx=16384).n_ctx == 16384


def test_a_ctx_beyond_the_trained_context_is_capped_with_a_note():
    result = plan(Q4, vram_gb=24, ctx=131072)
    assert result.n_ctx == 32768
    assert any("beyond the trained context" in n for n in result.notes)


def test_an_asked_ctx_that_does_not_fit_is_refused_with_the_largest_that_does():
    result = plan("qwen2.5-coder-7b-instruct-q6_k", vram_gb=8, ctx=32768)
    free = plan("qwen2.5-coder-7b-instruct-q6_k", vram_gb=8)
    assert free.fits and MIN_CTX <= free.n_ctx < 32768
    assert result.fits is False
    assert f"lower AGENT_CTX/--ctx to {free.n_ctx:,}" in result.suggestion


def test_a_small_gpu_gets_a_smaller_model_suggested():
    result = plan(Q4, vram_gb=3)
    assert result.fits is False
    assert "--profile qwen2.5-coder-3b-instruct-" in result.suggestion


def test_nothing_fits_a_tiny_budget_and_the_plan_says_so():
    result = plan("qwen2.5-coder-0.5b-instruct-q4_k_m", vram_gb=0.5)
    assert result.fits is False
    assert "nothing in the profiles fits" in result.suggestion


def test_a_more_generous_budget_never_plans_less_context():
    contexts = [plan("qwen2.5-coder-7b-instruct-q6_k", vram_gb=v).n_ctx for v in (7, 7.5, 8, 10, 16)]
    assert contexts == sorted(contexts)
    assert all(c % 256 == 0 for c in contexts)


def test_forced_gpu_layers_run_the_rest_on_the_cpu():
    result = plan(Q8, vram_gb=8, n_gpu_layers=20, gpu=GpuInfo("test GPU", 8 * GiB, 8 * GiB))
    assert result.fits is True
    assert (result.n_gpu_layers, result.output_on_gpu, result.llama_n_gpu_layers) == (20, False, 20)
    assert result.kv_bytes_per_token == 57344 * 20 // 28
    assert any("8 layers run on the CPU" in n for n in result.notes)


def test_without_a_gpu_the_plan_is_for_the_budget_and_says_the_server_runs_on_the_cpu():
    result = plan(Q4, vram_gb=8, gpu=None)
    assert result.device == "cpu" and result.llama_n_gpu_layers == 0
    assert any("runs on the CPU" in n for n in result.notes)
    on_gpu = plan(Q4, vram_gb=8, gpu=GpuInfo("test GPU", 24 * GiB, 23 * GiB))
    assert on_gpu.device == "cuda" and on_gpu.llama_n_gpu_layers == -1
    assert on_gpu.n_ctx == result.n_ctx


def test_a_gpu_with_less_free_memory_than_the_budget_plans_for_what_is_free():
    result = plan(Q4, vram_gb=8, gpu=GpuInfo("busy GPU", 8 * GiB, 6 * GiB))
    assert result.budget_bytes == 6 * GiB
    assert result.n_ctx < 32768
    assert any("less than AGENT_VRAM_GB" in n for n in result.notes)


def test_without_flash_attention_the_attention_scores_take_memory_per_token():
    assert plan(Q4, vram_gb=8, flash_attn=False).n_ctx < plan(Q4, vram_gb=8).n_ctx


def test_transformers_needs_4_bit_for_7b_on_8_gb_and_not_on_24_gb():
    small = plan("qwen2.5-coder-7b-instruct", vram_gb=8, backend="transformers")
    assert small.fits and small.load_in_4bit is True
    big = plan("qwen2.5-coder-7b-instruct", vram_gb=24, backend="transformers")
    assert big.fits and big.load_in_4bit is False
    assert big.weights_bytes == layout_from_profile(get_profile("qwen2.5-coder-7b-instruct")).total_bytes
    assert big.kv_cache_type == "bf16"


def test_transformers_3b_fits_8_gb_in_bf16():
    result = plan("qwen2.5-coder-3b-instruct", vram_gb=8, backend="transformers")
    assert result.fits and result.load_in_4bit is False


def test_json_shape_has_the_documented_keys():
    d = plan(Q4).to_dict()
    for key in ("fits", "n_ctx", "n_gpu_layers", "weights_bytes", "kv_bytes_per_token", "total_bytes", "suggestion"):
        assert key in d
    assert isinstance(d["notes"], list)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        plan(Q4, backend="vllm")
    with pytest.raises(ValueError):
        plan(Q4, kv_cache_type="q4_0")


def test_transformers_suggests_a_smaller_hugging_face_model_for_its_own_backend():
    result = plan("qwen2.5-coder-7b-instruct", vram_gb=4, backend="transformers")
    assert result.fits is False
    assert result.suggestion.startswith("use qwen2.5-coder-3b-instruct (6.18 GB), which fits in 4-bit with ")
    assert result.suggestion.endswith("bash runsv.sh --profile qwen2.5-coder-3b-instruct --backend transformers")


def test_suggestions_are_planned_for_the_free_memory_of_a_busy_gpu():
    busy = GpuInfo("busy GPU", 8 * GiB, int(5.5 * GiB))
    result = plan(Q8, vram_gb=8, gpu=busy)
    assert result.fits is False
    # q6_k (6.25 GB) would fit 8 GiB but not 5.5 GiB free; q4_k_m (4.68 GB) does
    assert "--profile qwen2.5-coder-7b-instruct-q4_k_m" in result.suggestion
