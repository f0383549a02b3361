"""Build the gateway the person asked for from the settings; never pick a provider by itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from core.errors import ConfigError
from core.gateway import ModelGateway
from gate.gemini import GeminiGateway
from gate.openai_compat import OpenAICompatGateway

if TYPE_CHECKING:
    from boot.settings import Settings

Provider = Literal["local", "gemini"]


def make_gateway(settings: "Settings", provider: Provider = "local") -> ModelGateway:
    """A fresh gateway for ``provider``: ``local`` (any OpenAI-compatible server) or ``gemini``.

    ``local`` with no ``AGENT_MODEL`` uses the first model the server lists, asked on first use.
    A Gemini key being present does not make ``local`` use Gemini.
    """
    if provider == "local":
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return OpenAICompatGateway(settings.model_url, settings.model, key, timeout_s=settings.request_timeout_s,
                                   temperature=settings.temperature)
    if provider == "gemini":
        if settings.gemini_api_key is None or not settings.gemini_api_key.get_secret_value().strip():
            raise ConfigError("GEMINI_API_KEY is not set; Gemini needs an API key",
                              hint="make one at https://aistudio.google.com/apikey and put GEMINI_API_KEY=… in .env")
        return GeminiGateway(settings.gemini_api_key.get_secret_value().strip(), settings.gemini_model,
                             settings.gemini_base_url, timeout_s=settings.request_timeout_s,
                             temperature=settings.temperature)
    raise ConfigError(f"unknown model provider {provider!r}; expected 'local' or 'gemini'")
