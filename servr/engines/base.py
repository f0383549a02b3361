"""The engine interface every backend implements, and the plain data it speaks.

The server owns everything that is the same for every backend: prompt rendering with the
model's chat template, stop strings, tool-call parsing, the queue and the wire format. An engine
only turns prompt token ids into generated tokens, one at a time, on the thread that iterates it.

Constrained decoding is described, not compiled, here (:class:`Constraint`): the llama.cpp engine
turns it into a GBNF grammar, another backend into whatever its grammar library takes.
Prefix KV reuse is the engine's business; it reports how much of the prompt it reused in
:attr:`Generation.cached_tokens`.
"""

from __future__ import annotations

import abc
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal


@dataclass(frozen=True)
class ToolSpec:
    """A tool the output may call: its name and the JSON schema of its arguments."""

    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Constraint:
    """What the generated text must match.

    ``json``: any JSON object. ``json_schema``: JSON valid against ``schema``. ``tool_call``:
    ``<tool_call>\\n{"name": N, "arguments": A}\\n</tool_call>`` where N is one of ``tools`` and A is
    valid against that tool's schema.
    """

    kind: Literal["json", "json_schema", "tool_call"]
    schema: dict[str, Any] | None = None
    tools: tuple[ToolSpec, ...] = ()


def tool_call_schema(constraint: Constraint) -> dict[str, Any]:
    """The JSON schema of the object inside ``<tool_call>``: one alternative per tool."""
    alternatives = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters or {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in constraint.tools
    ]
    return alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each token. ``temperature`` 0 is greedy; ``top_logprobs`` None: no logprobs."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int | None = None
    constraint: Constraint | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """Log probability of a chosen token and of the most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Step:
    """One generated token. ``text`` may be empty while a multi-byte character is incomplete."""

    token_id: int
    text: str
    logprob: TokenLogprob | None = None


@dataclass(frozen=True)
class PromptProgress:
    """How far prompt processing has come, as llama-server reports it: of ``total`` prompt tokens,
    ``cache`` were reused and ``processed`` (cached ones included) are in the KV cache now."""

    total: int
    cache: int
    processed: int
    time_ms: int


ProgressCallback = Callable[[PromptProgress], None]


@dataclass
class Generation:
    """A running generation: iterate :attr:`steps` on one thread; read the rest when it ends.

    ``finish_reason`` is ``"stop"`` (end-of-generation or turn-start token, or grammar complete),
    ``"length"`` (``max_tokens`` reached) or ``"cancelled"`` (the cancel flag was seen).
    ``drafted``/``accepted``: tokens guessed by speculative decoding and how many of them held.
    """

    prompt_tokens: int
    cached_tokens: int
    steps: Iterator[Step]
    finish_reason: str = "stop"
    completion_tokens: int = 0
    drafted: int = 0
    accepted: int = 0


@dataclass(frozen=True)
class ChatTemplate:
    """The model's chat template and the special tokens it refers to."""

    source: str  # the Jinja text
    origin: Literal["gguf", "tokenizer", "fallback"]
    bos_token: str = ""
    eos_token: str = ""


# ChatML: what SmolLM2, Qwen and many others use; only for models that carry no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class Engine(abc.ABC):
    """One loaded model. Not thread-safe: the server's scheduler runs one generation at a time.

    :meth:`tokenize` and :meth:`detokenize` may be called from any thread while a generation runs.
    """

    backend: str
    model_path: Path
    model_id: str
    n_ctx: int
    n_vocab: int
    reports_progress: bool = False  # generate() takes ``progress=`` (a ProgressCallback)

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What is loaded and how: backend, model_path, model_id, n_ctx, n_threads, n_gpu_layers, chat_template."""

    @abc.abstractmethod
    def chat_template(self) -> ChatTemplate:
        """The chat template to render prompts with."""

    @abc.abstractmethod
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``; ``parse_special`` turns ``<|im_start|>`` and the like into their ids."""

    @abc.abstractmethod
    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a rendered prompt, with the BOS token the model expects (once)."""

    @abc.abstractmethod
    def detokenize(self, tokens: list[int]) -> str:
        """Text of ``tokens`` (special tokens included)."""

    @abc.abstractmethod
    def special_token_id(self, text: str) -> int | None:
        """The id of a special token spelled ``text`` (e.g. ``<|fim_prefix|>``), or ``None``."""

    @abc.abstractmethod
    def check_constraint(self, constraint: Constraint) -> None:
        """Raise ``ValueError`` saying why, when this backend cannot enforce ``constraint``."""

    @abc.abstractmethod
    def generate(self, prompt: list[int], params: SamplingParams, cancel: threading.Event) -> Generation:
        """Start generating after ``prompt``; the steps stop at end-of-generation, ``max_tokens`` or ``cancel``."""

    def close(self) -> None:
        """Free the model's memory."""


_ID_RE = re.compile(r"[^a-z0-9_]+")


def model_id_from_path(path: Path) -> str:
    """The served id a file or folder gets by default: ``SmolLM2-135M-Instruct.Q4_1.gguf`` → ``smollm2-135m-instruct-q4_1``."""
    name = path.name
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
    return _ID_RE.sub("-", name.lower()).strip("-") or "model"
