"""The llama.cpp engine (llama-cpp-python): GGUF files on CPU or GPU."""

from __future__ import annotations

import codecs
import dataclasses
import json
import ctypes
import os
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp.llama_grammar import LlamaGrammar

from core.errors import ConfigError, ModelNotFound
from model.inspect import inspect_weights
from servr.engines.base import (
    CHATML_TEMPLATE,
    ChatTemplate,
    Constraint,
    Engine,
    Generation,
    SamplingParams,
    Step,
    TokenLogprob,
)
from servr.engines.llama_states import DEFAULT_STATE_CACHE_BYTES, DEFAULT_STATE_MIN_TOKENS, StateCache
from servr.grammar import to_gbnf

DEFAULT_CTX_CAP = 8192  # a model's trained context can be 128k; KV for that would not fit a small GPU


def gguf_trained_context(path: Path) -> int | None:
    """The context length the model was trained with, from the GGUF header (no weights loaded)."""
    try:
        return inspect_weights(path).arch.trained_ctx or None
    except (OSError, ValueError, KeyError, IndexError, struct.error):
        return None  # llama.cpp's own load says what is wrong with the file


def default_threads() -> int:
    """Half the CPUs this process may use (llama.cpp's rule: one thread per physical core).

    More threads than free cores is far worse than fewer: llama.cpp's threads meet at a barrier
    after every layer, and one descheduled thread stalls the rest (measured on a busy 2-core
    machine: 2 threads 1-2 tokens/s, 1 thread 20 tokens/s).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // 2)


def cpu_has_amx() -> bool:
    """Whether the CPU advertises Intel AMX (llama.cpp then repacks weights for it)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_int8" in line.split()
    except OSError:
        pass
    return False


def llama_arguments(model_path: Path, *, n_ctx: int, n_threads: int, n_gpu_layers: int, n_batch: int) -> dict[str, Any]:
    """The keyword arguments for ``Llama(...)``.

    Flash attention is on whenever layers go to the GPU: the memory planner counts on it (without
    it llama.cpp reserves a score matrix per head that a 7B model at 32k context cannot afford on
    8 GB), and llama-cpp-python leaves it off by default. On the CPU it stays off (no gain there).
    """
    return {"model_path": str(model_path), "n_ctx": n_ctx, "n_batch": min(n_batch, n_ctx), "n_threads": n_threads,
            "n_threads_batch": n_threads, "n_gpu_layers": n_gpu_layers, "flash_attn": n_gpu_layers != 0,
            "logits_all": False, "verbose": False}


class _LlamaWithoutExtraBuffers(Llama):
    """``Llama`` with llama.cpp's extra CPU buffer types (AMX, weight repacking) turned off.

    llama.cpp's AMX kernels fault (SIGSEGV in batched decode) on virtual machines that advertise
    AMX without fully supporting it, and the kernel's own permission check passes there, so it
    cannot be probed safely. ``Llama`` has no argument for it, hence the setter.
    """

    @property
    def model_params(self) -> Any:
        return self.__dict__["_model_params"]

    @model_params.setter
    def model_params(self, params: Any) -> None:
        params.use_extra_bufts = False
        self.__dict__["_model_params"] = params


class LlamaCppEngine(Engine):
    """One GGUF model in one llama.cpp context; the KV cache of the previous prompt is reused, and
    the sequences of other conversations are kept in a small LRU (``StateCache``) to be restored."""

    backend = "llamacpp"

    def __init__(self, model_path: Path, *, model_id: str, n_ctx: int | None = None, n_threads: int | None = None,
                 n_gpu_layers: int | None = None, n_batch: int = 512,
                 state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES,
                 state_min_tokens: int = DEFAULT_STATE_MIN_TOKENS) -> None:
        if not model_path.is_file():
            raise ModelNotFound(f"model file not found: {model_path}", hint="set AGENT_MODEL_PATH or pass --model")
        if n_ctx is None:  # the header is read only when needed: it costs a noticeable part of start-up
            trained = gguf_trained_context(model_path)
            n_ctx = min(trained or DEFAULT_CTX_CAP, DEFAULT_CTX_CAP)
        if n_gpu_layers is None:
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self.model_path = model_path
        self.model_id = model_id
        self.n_threads = n_threads or default_threads()
        self.n_gpu_layers = n_gpu_layers
        try:
            llama_class = _LlamaWithoutExtraBuffers if cpu_has_amx() else Llama
            self._llm = llama_class(**llama_arguments(model_path, n_ctx=n_ctx, n_threads=self.n_threads,
                                                      n_gpu_layers=n_gpu_layers, n_batch=n_batch))
        except ValueError as exc:
            raise ModelNotFound(f"llama.cpp could not load {model_path}: {exc}",
                                hint="is it a complete GGUF file? a partial download is smaller than the file's size") from None
        self.n_ctx_train = int(self._llm._model.n_ctx_train())
        if n_ctx > self.n_ctx_train:
            self._llm.close()
            raise ConfigError(f"bad setting AGENT_CTX (got {n_ctx}): the model was trained for {self.n_ctx_train} tokens",
                              hint=f"use --ctx {self.n_ctx_train} or less")
        self.n_ctx = self._llm.n_ctx()
        self.n_vocab = self._llm.n_vocab()
        self._vocab = self._llm._model.vocab
        self._piece_buf = ctypes.create_string_buffer(64)
        self._grammars: OrderedDict[str, str] = OrderedDict()
        self._states = StateCache(state_cache_bytes, state_min_tokens)
        self._template = self._read_template()

    # --- what is loaded ------------------------------------------------------------------------
    def _token_text(self, key: str) -> str:
        value = self._llm.metadata.get(key)
        if value is None:
            return ""
        try:
            return self._llm._model.token_get_text(int(value))
        except (ValueError, RuntimeError):
            return ""

    def _read_template(self) -> ChatTemplate:
        bos = self._token_text("tokenizer.ggml.bos_token_id")
        eos = self._token_text("tokenizer.ggml.eos_token_id")
        source = self._llm.metadata.get("tokenizer.chat_template")
        if source:
            return ChatTemplate(source, "gguf", bos, eos)
        return ChatTemplate(CHATML_TEMPLATE, "fallback", bos, eos)

    def chat_template(self) -> ChatTemplate:
        return self._template

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model_path": str(self.model_path),
            "model_id": self.model_id,
            "n_ctx": self.n_ctx,
            "n_ctx_train": self.n_ctx_train,
            "n_threads": self.n_threads,
            "n_gpu_layers": self.n_gpu_layers,
            "flash_attn": self.n_gpu_layers != 0,
            "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
            "chat_template": self._template.origin,
            "n_vocab": self.n_vocab,
            "fim": self.special_token_id("<|fim_middle|>") is not None,
            "prefix_states": self._states.describe(),
        }

    # --- tokens --------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)

    def detokenize(self, tokens: list[int]) -> str:
        buf = ctypes.create_string_buffer(256)
        out = bytearray()
        for token in tokens:
            n = llama_cpp.llama_token_to_piece(self._vocab, int(token), buf, len(buf), 0, True)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, int(token), buf, len(buf), 0, True)
            out += buf.raw[:n]
        return out.decode("utf-8", errors="replace")

    def special_token_id(self, text: str) -> int | None:
        ids = self.tokenize(text, parse_special=True)
        if len(ids) == 1 and self.tokenize(text, parse_special=False) != ids:
            return ids[0]
        return None

    def encode_prompt(self, text: str) -> list[int]:
        ids = self.tokenize(text, parse_special=True)
        if self._llm._model.add_bos_token():
            bos = int(self._llm.token_bos())
            if not ids or ids[0] != bos:
                ids.insert(0, bos)
        return ids

    # --- constrained decoding ------------------------------------------------------------------
    def check_constraint(self, constraint: Constraint) -> None:
        self._grammar_text(constraint)

    def _grammar_text(self, constraint: Constraint) -> str:
        key = json.dumps(dataclasses.asdict(constraint), sort_keys=True)
        if key in self._grammars:
            self._grammars.move_to_end(key)
            return self._grammars[key]
        text = to_gbnf(constraint)
        # let llama.cpp's own parser judge it now: a grammar it rejects must be a 400, not a crash later
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise ValueError("the JSON schema gave a grammar llama.cpp cannot parse; simplify the schema")
        llama_cpp.llama_sampler_free(sampler)
        self._grammars[key] = text
        while len(self._grammars) > 32:
            self._grammars.popitem(last=False)
        return text

    # --- generation ----------------------------------------------------------------------------
    def _reused_prefix(self, prompt: list[int]) -> int:
        """How many prompt tokens llama-cpp-python's ``generate`` will keep in the KV cache (its own rule)."""
        llm = self._llm
        if llm.n_tokens == 0:
            return 0
        common = 0
        for a, b in zip(llm._input_ids, prompt):
            if a != b:
                break
            common += 1
        consumed = common == len(prompt)
        if consumed and llm.n_tokens == len(prompt) and not llm._requires_eval:
            return len(prompt)
        return common - 1 if consumed else common

    def generate(self, prompt: list[int], params: SamplingParams, cancel: threading.Event) -> Generation:
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) + params.max_tokens > self.n_ctx:
            raise ValueError(f"{len(prompt)} prompt tokens + {params.max_tokens} max_tokens exceed the context of {self.n_ctx}")
        grammar = None
        if params.constraint is not None:
            grammar = LlamaGrammar.from_string(self._grammar_text(params.constraint), verbose=False)
        self._states.prepare(self._llm, prompt)  # on the worker thread: nothing else touches the KV cache
        cached = self._reused_prefix(prompt)
        generation = Generation(prompt_tokens=len(prompt), cached_tokens=cached, steps=iter(()))
        generation.steps = self._steps(prompt, params, grammar, cancel, generation)
        return generation

    def _steps(self, prompt: list[int], params: SamplingParams, grammar: LlamaGrammar | None,
               cancel: threading.Event, generation: Generation) -> Iterator[Step]:
        llm = self._llm
        llm.set_seed(params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        tokens = llm.generate(
            prompt, top_k=0, top_p=params.top_p, min_p=0.0, typical_p=1.0, temp=params.temperature,
            repeat_penalty=1.0, frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty, grammar=grammar,
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        to_piece = self._piece
        is_eog = llama_cpp.llama_vocab_is_eog
        vocab = self._vocab
        count = 0
        generation.finish_reason = "length"
        try:
            for token in tokens:
                if is_eog(vocab, token):
                    generation.finish_reason = "stop"
                    break
                count += 1
                generation.completion_tokens = count
                logprob = self._logprob(token, params.top_logprobs) if params.top_logprobs is not None else None
                yield Step(token, decoder.decode(to_piece(token)), logprob)
                if cancel.is_set():
                    generation.finish_reason = "cancelled"
                    break
                if count >= params.max_tokens:
                    break
        finally:
            tokens.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            yield Step(-1, tail)

    def _piece(self, token: int) -> bytes:
        """The bytes of one token, special tokens spelled out (``<tool_call>`` must reach the parser)."""
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, True)
        if n < 0:  # longer than the buffer: grow it once
            self._piece_buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, True)
        return self._piece_buf.raw[:n]

    def _logprob(self, token: int, top_n: int) -> TokenLogprob:
        # the logits that produced ``token`` are still the context's last row until the next eval
        ptr = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        top: tuple[tuple[str, float], ...] = ()
        if top_n > 0:
            best = np.argpartition(-logprobs, top_n)[:top_n]
            best = best[np.argsort(-logprobs[best])]
            top = tuple((self.detokenize([int(i)]), float(logprobs[i])) for i in best)
        return TokenLogprob(self.detokenize([token]), float(logprobs[token]), top)

    def close(self) -> None:
        self._llm.close()
