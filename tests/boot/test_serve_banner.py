"""The start-up block and the download progress lines of boot/serve.py."""

from __future__ import annotations

from pathlib import Path

from boot.serve import _LineProgress, banner
from model.inspect import layout_from_profile
from model.locate import ResolvedModel
from model.profiles import default_profile
from servr.planner import GiB, GpuInfo, plan_memory


def _info(**kw):
    info = {"backend": "llamacpp", "model_path": "/w/qwen.gguf", "model_id": "qwen2.5-coder-7b-instruct-q4_k_m",
            "n_ctx": 32768, "n_threads": 8, "n_gpu_layers": -1, "chat_template": "gguf"}
    info.update(kw)
    return info


def test_banner_says_what_is_served_how_and_where_to_point_clients():
    p = default_profile()
    plan = plan_memory(layout_from_profile(p), profile=p, gpu=GpuInfo("RTX 4060", 8 * GiB, 8 * GiB))
    text = banner(ResolvedModel(Path("/w/qwen.gguf"), "weights", p), _info(), plan, "127.0.0.1", 8000, False)
    assert "/w/qwen.gguf  (found in model/weights/)" in text
    assert "served as  qwen2.5-coder-7b-instruct-q4_k_m" in text
    assert "backend    llamacpp   context 32,768 tokens   chat template from gguf" in text
    assert "8 CPU threads, all layers on the GPU" in text
    assert "export AGENT_MODEL_URL=http://127.0.0.1:8000/v1" in text
    assert 'api_key="none"' in text


def test_banner_on_the_cpu_with_a_key_and_a_wildcard_host():
    p = default_profile()
    plan = plan_memory(layout_from_profile(p), profile=p, gpu=None)
    text = banner(ResolvedModel(Path("/d/smol.gguf"), "demo", None), _info(n_gpu_layers=0), plan, "0.0.0.0", 9000, True)
    assert "CPU only" in text and "running on the CPU" in text
    assert "bearer key required on /v1" in text and 'api_key="<your key>"' in text
    assert "AGENT_MODEL_URL=http://127.0.0.1:9000/v1" in text


def test_line_progress_prints_a_line_per_tenth(capsys):
    progress = _LineProgress()
    progress.start("model.gguf", 1000, 250)
    for _ in range(75):
        progress.advance(10)
    progress.finish()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "downloading model.gguf (0.00 GB, resuming at 0.00 GB)"
    assert err[1:] == [f"  model.gguf: {t}%" for t in range(20, 101, 10)]


def test_banner_warns_when_a_gpu_is_present_but_llama_cpp_cannot_use_it():
    p = default_profile()
    plan = plan_memory(layout_from_profile(p), profile=p, gpu=GpuInfo("RTX 4060", 8 * GiB, 8 * GiB))
    text = banner(ResolvedModel(Path("/w/q.gguf"), "flag", p), _info(gpu_offload=False), plan, "127.0.0.1", 8000,
                  False)
    assert "CPU only" in text and "built without GPU support" in text and "GGML_CUDA=on" in text


def test_effective_settings_take_the_plan_and_name_the_model_by_its_profile(monkeypatch):
    from boot.serve import effective_settings
    from boot.settings import load_settings

    for name in ("AGENT_MODEL", "AGENT_CTX", "AGENT_N_GPU_LAYERS"):
        monkeypatch.delenv(name, raising=False)
    p = default_profile()
    plan = plan_memory(layout_from_profile(p), profile=p, gpu=GpuInfo("RTX 4060", 8 * GiB, 8 * GiB))
    resolved = ResolvedModel(Path("/w") / p.files[0], "weights", p)
    eff = effective_settings(load_settings(), resolved, plan)
    assert (eff.model, eff.ctx, eff.n_gpu_layers, eff.model_path) == (p.id, 32768, -1, str(resolved.path))
    by_hand = effective_settings(load_settings(model="coder", ctx=4096, n_gpu_layers=10), resolved, plan)
    assert (by_hand.model, by_hand.ctx, by_hand.n_gpu_layers) == ("coder", 4096, 10)


def test_rich_progress_starts_over_when_the_server_restarts_the_file():
    from boot.serve import _RichProgress

    progress = _RichProgress()
    progress.start("model.gguf", 1000, 100)
    progress.advance(500)
    progress.advance(-600)
    progress.advance(300)
    task = progress._progress.tasks[-1]
    progress.finish()
    assert (task.total, task.completed) == (1000, 300)


def test_on_a_machine_without_a_gpu_the_plan_claims_no_gpu():
    from boot.serve import plan_text

    p = default_profile()
    cpu = plan_text(plan_memory(layout_from_profile(p), profile=p, gpu=None))
    assert "on the GPU" not in cpu
    assert "no GPU found: the model runs on the CPU, in main memory" in cpu
    assert "(on a GPU: " in cpu
    gpu = plan_text(plan_memory(layout_from_profile(p), profile=p, gpu=GpuInfo("RTX 4060", 8 * GiB, 8 * GiB)))
    assert "on the GPU (" in gpu and "no GPU found" not in gpu
