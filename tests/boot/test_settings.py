"""Settings: environment, flags over environment, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from boot.settings import Settings, env_name, load_settings
from core.errors import ConfigError


def test_defaults_match_the_design():
    s = load_settings()
    assert s.model_url == "http://127.0.0.1:8000/v1"
    assert (s.host, s.port, s.vram_gb, s.max_steps, s.backend) == ("127.0.0.1", 8000, 8.0, 20, "auto")


def test_environment_is_read_with_the_agent_prefix(monkeypatch):
    monkeypatch.setenv("AGENT_PORT", "9001")
    monkeypatch.setenv("AGENT_ENABLE_SHELL", "false")
    monkeypatch.setenv("AGENT_MODEL_ALIASES", "qwen, coder ,")
    monkeypatch.setenv("GEMINI_MODEL", "gemini-x")
    s = load_settings()
    assert s.port == 9001 and s.enable_shell is False
    assert s.model_aliases == ["qwen", "coder"]
    assert s.gemini_model == "gemini-x"


def test_flags_override_the_environment_and_none_means_not_given(monkeypatch):
    monkeypatch.setenv("AGENT_MAX_STEPS", "7")
    assert load_settings(max_steps=3).max_steps == 3
    assert load_settings(max_steps=None).max_steps == 7


@pytest.mark.parametrize("env,value,needle", [
    ("AGENT_PORT", "eighty", "AGENT_PORT"),
    ("AGENT_BACKEND", "onnx", "AGENT_BACKEND"),
    ("AGENT_MODEL_URL", "localhost:8000", "AGENT_MODEL_URL"),
    ("AGENT_VRAM_GB", "-1", "AGENT_VRAM_GB"),
])
def test_a_bad_value_names_the_setting_in_one_line(monkeypatch, env, value, needle):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_secrets_are_not_echoed_in_errors(monkeypatch):
    with pytest.raises(ConfigError) as info:
        load_settings(api_key=["not", "a", "string"])
    assert "not" not in str(info.value).replace("AGENT_API_KEY", "")


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch):
    (tmp_path / ".env").write_text("AGENT_PORT=8765\nGEMINI_API_KEY=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    s = Settings(_env_file=".env")  # type: ignore[call-arg]
    assert s.port == 8765
    assert s.gemini_api_key is not None and s.gemini_api_key.get_secret_value() == "from-dotenv"


def test_every_field_has_a_description_and_an_env_name():
    for name, info in Settings.model_fields.items():
        assert info.description, name
        assert env_name(name).isupper()
    assert env_name("gemini_api_key") == "GEMINI_API_KEY"
    assert env_name("model_url") == "AGENT_MODEL_URL"
