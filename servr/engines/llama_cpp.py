"""The llama.cpp engine (llama-cpp-python): GGUF files on CPU or GPU."""

from __future__ import annotations

import codecs
import dataclasses
import json
import ctypes
import os
import struct
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp._internals import LlamaSampler

from core.errors import ConfigError, ModelNotFound
from model.inspect import inspect_weights
from servr.engines.base import (
    CHATML_TEMPLATE,
    ChatTemplate,
    Constraint,
    Engine,
    Generation,
    ProgressCallback,
    PromptProgress,
    SamplingParams,
    Step,
    TokenLogprob,
)
from servr.engines.cpu import physical_cores
from servr.engines.llama_states import DEFAULT_STATE_CACHE_BYTES, DEFAULT_STATE_MIN_TOKENS, StateCache, common_prefix
from servr.engines.lookup import DraftPolicy, find_draft
from servr.engines.sampling import Sampler
from servr.grammar import to_gbnf

DEFAULT_CTX_CAP = 8192  # a model's trained context can be 128k; KV for that would not fit a small GPU


def gguf_trained_context(path: Path) -> int | None:
    """The context length the model was trained with, from the GGUF header (no weights loaded)."""
    try:
        return inspect_weights(path).arch.trained_ctx or None
    except (OSError, ValueError, KeyError, IndexError, struct.error):
        return None  # llama.cpp's own load says what is wrong with the file


def default_threads() -> int:
    """One thread per physical core this process may use (llama.cpp's rule; see ``servr.engines.cpu``).

    More threads than free cores is far worse than fewer: llama.cpp's threads meet at a barrier
    after every layer, and one descheduled thread stalls the rest (measured on a busy 2-core
    machine: 2 threads 1-2 tokens/s, 1 thread 20 tokens/s). On a busy machine pass ``--threads``.
    """
    return physical_cores()


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

    Flash attention is always on (llama-cpp-python leaves it off by default). On a GPU the memory
    planner counts on it: without it llama.cpp reserves a score matrix per head that a 7B model at
    32k context cannot afford on 8 GB. On the CPU it makes a row's logits the same bits whether the
    row is evaluated alone or in a batch (measured: without it they differ by up to 0.9 on SmolLM2
    and 0.4 on Qwen2.5-0.5B), which prompt lookup needs to give greedy output identical token for
    token to plain decoding, and a ``seed`` to repeat with and without a cached prefix.
    """
    return {"model_path": str(model_path), "n_ctx": n_ctx, "n_batch": min(n_batch, n_ctx), "n_threads": n_threads,
            "n_threads_batch": n_threads, "n_gpu_layers": n_gpu_layers, "flash_attn": True,
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


# Tokens that open a new turn: the model writing one has finished its answer (it would go on to
# play the user). Which of them a vocabulary holds as a special token is looked up at load.
TURN_START_TOKENS = ("<|im_start|>", "<|start_header_id|>", "<start_of_turn>", "<|start|>")
# Special tokens the tool-call parser reads: spelled out in the text even where a GGUF marks them control.
KEPT_SPECIAL_TOKENS = ("<tool_call>", "</tool_call>")


class LlamaCppEngine(Engine):
    """One GGUF model in one llama.cpp context; the KV cache of the previous prompt is reused, and
    the sequences of other conversations are kept in a small LRU (``StateCache``) to be restored.

    Decoding runs on llama.cpp's batch API (``_tokens``), with prompt-lookup speculative decoding
    unless ``prompt_lookup`` is False or a grammar constrains the output.
    """

    backend = "llamacpp"
    reports_progress = True

    def __init__(self, model_path: Path, *, model_id: str, n_ctx: int | None = None, n_threads: int | None = None,
                 n_gpu_layers: int | None = None, n_batch: int = 512,
                 state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES,
                 state_min_tokens: int = DEFAULT_STATE_MIN_TOKENS, prompt_lookup: bool = True) -> None:
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
        self.prompt_lookup = prompt_lookup
        self._stop_ids = self._read_stop_ids()
        self._kept_ids = {i for i in (self.special_token_id(t) for t in KEPT_SPECIAL_TOKENS) if i is not None}

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

    def _read_stop_ids(self) -> frozenset[int]:
        """The turn-start tokens this vocabulary has (end-of-generation ones are asked of llama.cpp)."""
        turns = [self.special_token_id(t) for t in TURN_START_TOKENS]
        return frozenset(t for t in turns if t is not None)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model_path": str(self.model_path),
            "model_id": self.model_id,
            "n_ctx": self.n_ctx,
            "n_ctx_train": self.n_ctx_train,
            "n_threads": self.n_threads,
            "n_gpu_layers": self.n_gpu_layers,
            "flash_attn": True,
            "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
            "chat_template": self._template.origin,
            "n_vocab": self.n_vocab,
            "fim": self.special_token_id("<|fim_middle|>") is not None,
            "prefix_states": self._states.describe(),
            "prompt_lookup": self.prompt_lookup,
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
    def _kept_prefix(self, prompt: list[int]) -> int:
        """How many prompt tokens stay in the KV cache: the common prefix with what it holds, less
        the last prompt token, which is always evaluated again (on its own: see ``_prefill``)."""
        llm = self._llm
        common = common_prefix(np.asarray(llm.input_ids[: llm.n_tokens], dtype=np.int32), prompt)
        return min(common, len(prompt) - 1)

    def generate(self, prompt: list[int], params: SamplingParams, cancel: threading.Event,
                 progress: ProgressCallback | None = None) -> Generation:
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) + params.max_tokens > self.n_ctx:
            raise ValueError(f"{len(prompt)} prompt tokens + {params.max_tokens} max_tokens exceed the context of {self.n_ctx}")
        grammar = self._grammar_text(params.constraint) if params.constraint is not None else None
        self._states.prepare(self._llm, prompt)  # on the worker thread: nothing else touches the KV cache
        keep = self._kept_prefix(prompt)
        generation = Generation(prompt_tokens=len(prompt), cached_tokens=keep, steps=iter(()))
        generation.steps = self._steps(prompt, keep, params, grammar, cancel, generation, progress)
        return generation

    def _decode(self, tokens: Sequence[int], pos: int, all_logits: bool) -> None:
        """Evaluate ``tokens`` at positions ``pos``…; logits for every row or only the last one."""
        llm = self._llm
        batch = llm._batch.batch
        n = len(tokens)
        batch.n_tokens = n
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = pos + i
            batch.seq_id[i][0] = 0
            batch.n_seq_id[i] = 1
            batch.logits[i] = all_logits
        batch.logits[n - 1] = True
        rc = llama_cpp.llama_decode(llm._ctx.ctx, batch)
        if rc != 0:
            llm._ctx.kv_cache_seq_rm(0, pos, -1)
            llm.n_tokens = pos
            raise RuntimeError(f"llama_decode failed ({rc}) at position {pos} with {n} tokens")
        llm.input_ids[pos: pos + n] = tokens
        llm.n_tokens = pos + n
        llm._requires_eval = False

    def _row(self, i: int) -> np.ndarray:
        """The logits of row ``i`` of the last batch (valid until the next decode)."""
        ptr = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, i)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))

    def _prefill(self, prompt: list[int], keep: int, progress: ProgressCallback | None) -> None:
        """Evaluate the prompt after the kept prefix in ``n_batch`` chunks, reporting progress.

        The last prompt token goes in a batch of its own, whatever was cached: the logits the
        first token is drawn from then come from the same computation with and without a cached
        prefix (a batch of many rows may round differently), so a ``seed`` repeats exactly.
        """
        llm = self._llm
        started = time.perf_counter()
        total = len(prompt)

        def report(done: int) -> None:
            if progress is not None:
                progress(PromptProgress(total, keep, done, int((time.perf_counter() - started) * 1000)))

        llm._ctx.kv_cache_seq_rm(0, keep, -1)
        llm.n_tokens = keep
        report(keep)
        pos, last = keep, total - 1
        while pos < last:
            end = min(pos + llm.n_batch, last)
            self._decode(prompt[pos:end], pos, all_logits=False)
            pos = end
            report(pos)
        self._decode(prompt[last:], last, all_logits=False)
        report(total)

    def _grammar_chain(self, grammar: str, params: SamplingParams) -> LlamaSampler:
        """llama.cpp's sampler chain for a grammar-constrained generation (no speculation there)."""
        chain = LlamaSampler()
        if params.presence_penalty or params.frequency_penalty:
            chain.add_penalties(self.n_vocab, 64, 1.0, params.frequency_penalty, params.presence_penalty)
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            chain.close()
            raise ValueError("the JSON schema gave a grammar llama.cpp cannot parse; simplify the schema")
        llama_cpp.llama_sampler_chain_add(chain.sampler, sampler)
        if params.temperature <= 0:
            chain.add_greedy()
        else:
            chain.add_top_p(params.top_p, 1)
            chain.add_temp(params.temperature)
            chain.add_dist(params.seed % (1 << 32) if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        return chain

    def _steps(self, prompt: list[int], keep: int, params: SamplingParams, grammar: str | None,
               cancel: threading.Event, generation: Generation,
               progress: ProgressCallback | None) -> Iterator[Step]:
        self._prefill(prompt, keep, progress)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        chain = self._grammar_chain(grammar, params) if grammar is not None else None
        try:
            yield from self._tokens(params, chain, cancel, generation, decoder)
        finally:
            if chain is not None:
                chain.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            yield Step(-1, tail)

    def _tokens(self, params: SamplingParams, chain: LlamaSampler | None, cancel: threading.Event,
                generation: Generation, decoder: codecs.IncrementalDecoder) -> Iterator[Step]:
        """The decode loop: plain steps, or a drafted run checked in one batch (prompt lookup).

        Each check evaluates the last token and ``k`` guessed ones with logits for those rows only;
        the guesses are accepted in order while :meth:`Sampler.verify` agrees, then one more token
        comes from the first row that disagreed (or after the last guess). The KV cache and
        ``input_ids`` drop what was not accepted before anything is yielded, so a consumer that
        stops at any step (stop string, cancel) leaves a consistent cache for the next request.
        A grammar is applied by llama.cpp's own sampler chain, one token at a time: no drafting.
        """
        llm = self._llm
        sampler = Sampler(temperature=params.temperature, top_p=params.top_p, seed=params.seed,
                          presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty)
        policy = DraftPolicy() if self.prompt_lookup and chain is None else None
        ctx = llm._ctx.ctx

        chosen = 0  # tokens picked so far: the next one's position in the output (keys the seed's noise)

        def choose(row: int) -> int:
            nonlocal chosen
            if chain is not None:
                token = int(llama_cpp.llama_sampler_sample(chain.sampler, ctx, row))
            else:
                token = sampler.sample(self._row(row), chosen)
                sampler.accept(token)
            chosen += 1
            return token

        stop_ids, is_eog, vocab = self._stop_ids, llama_cpp.llama_vocab_is_eog, self._vocab
        top_n = params.top_logprobs
        count = 0
        generation.finish_reason = "length"
        prompt_len = llm.n_tokens
        escaped: np.ndarray | None = None  # the prompt as a JSON string would quote it (see _escaped_prompt)
        emit = [(choose(-1), -1)]  # (token, the row of logits it was chosen from)
        while True:
            for token, row in emit:
                if token in stop_ids or is_eog(vocab, token):
                    generation.finish_reason = "stop"
                    return
                count += 1
                generation.completion_tokens = count
                logprob = self._logprob(self._row(row), token, top_n) if top_n is not None else None
                text = decoder.decode(self._content_piece(token))
                if escaped is None and "\\" in text and policy is not None:
                    escaped = self._escaped_prompt(prompt_len)
                yield Step(token, text, logprob)
                if cancel.is_set():
                    generation.finish_reason = "cancelled"
                    return
                if count >= params.max_tokens:
                    return
            last = emit[-1][0]
            pos = llm.n_tokens
            room = min(params.max_tokens - count, self.n_ctx - pos - 1, llm.n_batch - 1)
            draft, match = (), 0
            if policy is not None and room > 0:
                context = np.append(llm.input_ids[:pos], last).astype(np.int32)
                if escaped is not None:  # matches in the context itself win ties: it comes last
                    context = np.concatenate([escaped, context])
                draft, match = find_draft(context, min(room, policy.k_max))
                if match:
                    draft = draft[: policy.want(match)]
            started = time.perf_counter()
            if len(draft) == 0:
                self._decode([last], pos, all_logits=False)
                emit = [(choose(-1), -1)]
                if policy is not None:
                    policy.plain_step(time.perf_counter() - started)
                continue
            draft = [int(t) for t in draft]
            self._decode([last, *draft], pos, all_logits=True)
            emit = []
            for j, guess in enumerate(draft):
                ok, token = sampler.verify(self._row(j), guess, chosen)
                sampler.accept(token)
                chosen += 1
                emit.append((token, j))
                if not ok:
                    break
            else:
                emit.append((choose(len(draft)), len(draft)))
            accepted = len(emit) - 1
            # the KV cache keeps ``last`` and the accepted guesses; the rest is dropped
            llm._ctx.kv_cache_seq_rm(0, pos + 1 + accepted, -1)
            llm.n_tokens = pos + 1 + accepted
            assert policy is not None
            policy.checked(match, len(draft), accepted, time.perf_counter() - started)
            generation.drafted, generation.accepted = policy.drafted, policy.accepted

    def _content_piece(self, token: int) -> bytes:
        """The bytes a token adds to the answer: nothing for a control token (``<|im_start|>``…),
        which the person must never see; user-defined ones like ``<tool_call>`` are spelled out
        (the tool-call parser reads them), as are the few in ``KEPT_SPECIAL_TOKENS`` whatever the
        GGUF calls them."""
        if token not in self._kept_ids and llama_cpp.llama_vocab_get_attr(self._vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
            return b""
        return self._piece(token)

    def _escaped_prompt(self, n: int) -> np.ndarray:
        """The tokens of the first ``n`` prompt tokens' text escaped as inside a JSON string.

        An agent's edit is a tool call whose ``old_string`` quotes the file it read, with newlines
        and quotes escaped (``\\n``, ``\\"``): those tokens occur nowhere in the prompt, so plain prompt
        lookup loses the match at every line. Built once per generation, when the answer first
        writes a backslash, and searched with the context.
        """
        text = self.detokenize([int(t) for t in self._llm.input_ids[:n]])
        escaped = json.dumps(text, ensure_ascii=False)[1:-1]
        return np.asarray(self.tokenize(escaped, parse_special=False), dtype=np.int32)

    def _piece(self, token: int) -> bytes:
        """The bytes of one token, special tokens spelled out (``<tool_call>`` must reach the parser)."""
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, True)
        if n < 0:  # longer than the buffer: grow it once
            self._piece_buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, True)
        return self._piece_buf.raw[:n]

    def _logprob(self, logits: np.ndarray, token: int, top_n: int) -> TokenLogprob:
        """Log probability of ``token`` under the model's raw ``logits`` (before any sampling setting)."""
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
