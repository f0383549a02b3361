"""make_gateway: the provider the person asked for, built from the one settings object."""

from __future__ import annotations

import pytest

from boot.settings import Settings
from core.errors import ConfigError
from core.messages import Message
from gate import GeminiGateway, OpenAICompatGateway, make_gateway
from gate.scripted_gemini import ScriptedGemini
from gate.scripted_server import ScriptedServer


def settings(**kw) -> Settings:
    base = {"model_url": "http://127.0.0.1:9/v1", "model": None, "api_key": None, "gemini_api_key": None}
    return Settings(**{**base, **kw})


def test_local_uses_the_model_url_model_key_and_temperature():
    with ScriptedServer([{"text": "local answer"}], api_key="sekret") as server:
        gateway = make_gateway(settings(model_url=server.base_url, model="qwen", api_key="sekret", temperature=0.4))
        assert isinstance(gateway, OpenAICompatGateway)
        assert gateway.complete([Message.user("hi")]).text == "local answer"
    assert (server.requests[0]["model"], server.requests[0]["temperature"]) == ("qwen", 0.4)


def test_local_without_a_model_asks_the_server_on_first_use():
    with ScriptedServer([], model="served-one") as server:
        assert make_gateway(settings(model_url=server.base_url)).model == "served-one"


def test_local_makes_no_request_when_built():
    gateway = make_gateway(settings(model="m"))  # nothing listens on port 9
    assert isinstance(gateway, OpenAICompatGateway) and gateway.model == "m"


def test_a_gemini_key_in_the_settings_does_not_switch_local_to_gemini():
    assert isinstance(make_gateway(settings(gemini_api_key="AIza-key", model="m"), "local"), OpenAICompatGateway)


def test_gemini_uses_key_model_and_base_url():
    with ScriptedGemini([{"text": "from gemini"}], api_key="AIza-key") as gemini:
        gateway = make_gateway(settings(gemini_api_key="AIza-key", gemini_model="gemini-2.5-pro",
                                        gemini_base_url=gemini.base_url), "gemini")
        assert isinstance(gateway, GeminiGateway) and gateway.model == "gemini-2.5-pro"
        assert gateway.complete([Message.user("hi")]).text == "from gemini"
    assert gemini.requests[0]["path"] == "/v1beta/models/gemini-2.5-pro:generateContent"


@pytest.mark.parametrize("key", [None, "  "])
def test_gemini_without_a_key_is_a_config_error_saying_what_to_set(key):
    with pytest.raises(ConfigError) as caught:
        make_gateway(settings(gemini_api_key=key), "gemini")
    assert str(caught.value).startswith("GEMINI_API_KEY is not set; Gemini needs an API key (make one at ")


def test_an_unknown_provider_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model provider 'openai'; expected 'local' or 'gemini'"):
        make_gateway(settings(), "openai")  # type: ignore[arg-type]


def test_each_call_returns_a_fresh_gateway():
    s = settings(model="m")
    assert make_gateway(s) is not make_gateway(s)
