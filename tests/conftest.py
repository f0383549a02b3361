"""Test-wide guards: no test reaches a real model, a hub or Google by accident."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"

# Set before any test module imports transformers / huggingface_hub / sentence-transformers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
for _secret in ("GEMINI_API_KEY", "AGENT_GEMINI_API_KEY", "OPENAI_API_KEY", "AGENT_API_KEY"):
    os.environ.pop(_secret, None)
# A developer's own settings must not change what the tests see.
for _name in [n for n in os.environ if n.startswith("AGENT_")]:
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True, scope="session")
def _no_dotenv():
    """Ignore the project's .env (a developer's real keys and paths) during tests."""
    from boot.settings import Settings

    saved = Settings.model_config.get("env_file")
    Settings.model_config["env_file"] = None
    yield
    Settings.model_config["env_file"] = saved


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """``../shared/fixtures`` (the Qwen vocabulary and template), or skip when it is not beside the repo."""
    if not (SHARED_FIXTURES / "ggml-vocab-qwen2.gguf").is_file():
        pytest.skip(f"shared test fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES
