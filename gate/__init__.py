"""Model gateways: the OpenAI-compatible one, Gemini, and the strict scripted fake for tests.

The stand-in servers for tests (``gate.scripted_server``, ``gate.scripted_gemini``) are imported
from their modules, so importing ``gate`` does not pull in uvicorn.
"""

from gate.factory import make_gateway
from gate.gemini import GeminiGateway
from gate.openai_compat import OpenAICompatGateway
from gate.scripted import ScriptedGateway, ScriptedRequest

__all__ = ["GeminiGateway", "OpenAICompatGateway", "ScriptedGateway", "ScriptedRequest", "make_gateway"]
