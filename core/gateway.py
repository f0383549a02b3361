"""The model gateway contract: one interface for every model provider.

Implementations live in ``gate/``: the OpenAI-compatible gateway (this project's server,
llama.cpp's llama-server, vLLM, Ollama, LM Studio), the Gemini gateway, and the strict scripted
fake used by tests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from core.messages import Completion, Message
from core.tools import Tool


@dataclass(frozen=True)
class StreamEvent:
    """Something a gateway reports while a completion is being produced.

    ``kind`` is ``"text"`` (a piece of the answer, in ``text``), ``"tool_call"`` (the model
    started a call of tool ``name``) or ``"progress"`` (the server has read ``done`` of the prompt's
    ``total`` tokens, ``cached`` of them reused, in ``time_ms``; before any text).
    """

    kind: str
    text: str = ""
    name: str = ""
    done: int = 0
    total: int = 0
    cached: int = 0
    time_ms: float = 0.0


StreamCallback = Callable[[StreamEvent], None]


class ModelGateway(Protocol):
    """What the loop needs from a model provider."""

    #: the model id sent with each request
    model: str

    def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[Tool] = (),
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        on_event: StreamCallback | None = None,
        cancel: threading.Event | None = None,
        tool_choice: str | None = None,
    ) -> Completion:
        """One model call. Streams through ``on_event`` when given; stops early when ``cancel`` is set.

        ``tool_choice="required"``: the reply must be a call of one of ``tools`` (a server that
        constrains its output then makes every call valid JSON for its tool's schema).

        Raises :class:`core.errors.GatewayError` (or a subclass) when the call fails.
        """
        ...

    def count_tokens(self, messages: Sequence[Message], tools: Sequence[Tool] = ()) -> int:
        """Tokens the request would take: exact when the server can tokenize, else an estimate."""
        ...

    def context_length(self) -> int | None:
        """The model's context window in tokens, when the provider says; ``None`` when unknown."""
        ...
