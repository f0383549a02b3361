"""The Transformers engine: a Hugging Face folder (safetensors + tokenizer) or a GGUF file, on CUDA or the CPU.

Generation is a decode loop of our own over ``model(input_ids, cache=kv_cache)`` on the
calling thread (the scheduler's worker), not ``model.generate`` with a streamer thread: one thread
owns the model, the cancel flag is read after every token (a client that leaves frees the model
within a token), and the loop controls what ``generate`` hides — the KV cache kept for the next
prompt (:mod:`servr.engines.hf_prefix`), the grammar mask (:mod:`servr.engines.hf_grammar`),
penalties, a per-request ``torch.Generator`` for ``seed`` and the logprobs of each chosen token.

Prompt-lookup speculative decoding (:mod:`servr.engines.lookup`) works here as in the llama.cpp
engine: a drafted run is fed in one forward pass with logits for its rows only, and each row's
token is picked as usual (one draw of the request's generator per position); a drafted token is
kept while it is the token picked, the cache is cut back after the first that is not. Picking
``t ~ p`` and keeping the draft when ``t`` equals it is the standard rule for a deterministic
draft (kept with probability p(draft), else ``t`` is distributed as p without it), so the output
is the model's distribution, and a seed gives the same text whatever was drafted. Requests with
a grammar decode plainly.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.errors import ConfigError, ModelNotFound
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
from servr.engines.hf_grammar import GrammarCache, TokenMask
from servr.engines.hf_prefix import PrefixCache, kv_length, new_dynamic_cache, reusable, truncate
from servr.engines.lookup import DraftPolicy, find_draft

DEFAULT_CTX_CAP = 8192  # as the llama.cpp engine: a trained context of 128k would not fit a small GPU
PREFILL_CHUNK = 512  # prompt tokens per forward pass: bounds activation memory, lets cancel be seen
PREFIX_SLOTS = 4  # conversations whose KV cache is kept
CPU_CACHE_CONTEXTS = 4  # on the CPU the kept caches may hold this many full contexts (RAM is cheap there)
# end-of-turn tokens of the common chat formats, on top of the model's declared EOS ids
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|end|>", "</s>")


def _weights_location(model_path: Path) -> tuple[Path, str | None]:
    """(folder to load from, GGUF file name inside it or ``None``)."""
    if model_path.is_file():
        if model_path.suffix.lower() != ".gguf":
            raise ConfigError(f"the Transformers backend serves a Hugging Face folder or a .gguf file, not {model_path.name}",
                              hint="pass the folder holding config.json and the safetensors files")
        return model_path.parent, model_path.name
    if not model_path.is_dir():
        raise ModelNotFound(f"model not found: {model_path}", hint="set AGENT_MODEL_PATH or pass --model")
    if not (model_path / "config.json").is_file():
        raise ModelNotFound(f"{model_path} has no config.json: it is not a Hugging Face model folder",
                            hint="pass the folder that holds config.json, the *.safetensors files and the tokenizer")
    return model_path, None


def _quantization(load_in_4bit: bool, device: str, dtype: torch.dtype) -> Any:
    if not load_in_4bit:
        return None
    if device != "cuda":
        raise ConfigError("4-bit loading (bitsandbytes) needs an NVIDIA GPU, and none is visible",
                          hint="on the CPU the model loads in float32; on a GPU machine check nvidia-smi")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("the memory plan needs 4-bit weights (the bf16 model does not fit AGENT_VRAM_GB), "
                          "and bitsandbytes is not installed",
                          hint="install it (.venv/bin/pip install bitsandbytes), or pick a smaller model or a GGUF "
                               "quantization (bash runsv.sh --plan shows what fits)") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def _cache_keyword(model: Any) -> str:
    """The keyword the model's ``forward`` takes its KV cache by.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and goes at 5.40);
    earlier releases know only ``past_key_values``. The signature says which this model speaks.
    """
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class _Detokenizer:
    """Text of a growing token list, piece by piece; holds back an incomplete multi-byte character."""

    def __init__(self, decode: Any) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # decoded as context, so a piece is cut exactly as the whole text is
        self._read = 0  # tokens whose text has been handed out

    def push(self, token: int) -> str:
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix:self._read])
        text = self._decode(self._ids[self._prefix:])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return text[len(before):]
        return ""

    def flush(self) -> str:
        before = self._decode(self._ids[self._prefix:self._read])
        return self._decode(self._ids[self._prefix:])[len(before):]


class TransformersEngine(Engine):
    """One Transformers causal LM; the KV caches of the last few prompts are reused."""

    backend = "transformers"

    def __init__(self, model_path: Path, *, model_id: str, n_ctx: int | None = None, n_threads: int | None = None,
                 device: str | None = None, load_in_4bit: bool = False, prefix_slots: int = PREFIX_SLOTS,
                 prefix_cache_tokens: int | None = None, prompt_lookup: bool = True) -> None:
        folder, gguf_file = _weights_location(model_path)
        self.prompt_lookup = prompt_lookup
        self._encode_lock = threading.Lock()
        if n_threads:
            torch.set_num_threads(n_threads)  # process-wide: this process serves one model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.dtype = torch.float32  # CPU half-precision matmuls are slow or missing
        quantization = _quantization(load_in_4bit, self.device, self.dtype)
        try:
            self._tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                str(folder), gguf_file=gguf_file, dtype=self.dtype, local_files_only=True,
                quantization_config=quantization,
                device_map={"": torch.cuda.current_device()} if self.device == "cuda" else None)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelNotFound(f"Transformers could not load {model_path}: {exc}",
                                hint="is the folder complete (config.json, *.safetensors, tokenizer files), "
                                     "or the GGUF of an architecture Transformers reads?") from None
        self._model = model.eval()
        self._cache_kwarg = _cache_keyword(self._model)
        self.model_path = model_path
        self.model_id = model_id
        self.load_in_4bit = load_in_4bit
        config = self._model.config
        trained = getattr(config, "max_position_embeddings", None)
        self.n_ctx_train = int(trained) if trained else None
        if n_ctx is None:
            n_ctx = min(self.n_ctx_train or DEFAULT_CTX_CAP, DEFAULT_CTX_CAP)
        elif self.n_ctx_train and n_ctx > self.n_ctx_train:
            raise ConfigError(f"bad setting AGENT_CTX (got {n_ctx}): the model was trained for {self.n_ctx_train} tokens",
                              hint=f"use --ctx {self.n_ctx_train} or less")
        self.n_ctx = n_ctx
        self.n_vocab = int(self._model.get_output_embeddings().weight.shape[0])
        self._eog = self._end_tokens()
        self._template = self._read_template()
        self._grammars = GrammarCache(self._tok, self.n_vocab, sorted(self._eog))
        budget = prefix_cache_tokens or n_ctx * (1 if self.device == "cuda" else CPU_CACHE_CONTEXTS)
        self._prefix = PrefixCache(new_dynamic_cache(config), slots=prefix_slots, max_tokens=budget)
        bos = self._tok.bos_token_id
        self._bos = bos if bos is not None and self._tok.encode("a", add_special_tokens=True)[:1] == [bos] else None

    # --- what is loaded ------------------------------------------------------------------------
    def _end_tokens(self) -> set[int]:
        ids: set[int] = set()
        for source in (self._model.generation_config, self._model.config, self._tok):
            value = getattr(source, "eos_token_id", None)
            ids.update([value] if isinstance(value, int) else list(value or ()))
        vocab = self._tok.get_added_vocab()
        ids.update(vocab[t] for t in END_TOKENS if t in vocab)
        return {i for i in ids if 0 <= i < self.n_vocab}

    def _read_template(self) -> ChatTemplate:
        bos, eos = self._tok.bos_token or "", self._tok.eos_token or ""
        source = self._tok.chat_template
        if isinstance(source, dict):  # several named templates: the default one
            source = source.get("default") or next(iter(source.values()), None)
        if source:
            return ChatTemplate(source, "tokenizer", bos, eos)
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
            "n_threads": torch.get_num_threads(),
            "n_gpu_layers": -1 if self.device == "cuda" else 0,
            "device": self.device,
            "dtype": "nf4" if self.load_in_4bit else str(self.dtype).removeprefix("torch."),
            "chat_template": self._template.origin,
            "n_vocab": self.n_vocab,
            "fim": self.special_token_id("<|fim_middle|>") is not None,
            "prefix_cache": {"slots": self._prefix.slots if self._prefix.enabled else 0,
                             "max_tokens": self._prefix.max_tokens},
        }

    # --- tokens --------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        # encode sets flags on the shared Rust tokenizer (split_special_tokens, truncation) before it runs:
        # two threads encoding at once could each see the other's flags
        with self._encode_lock:
            return list(self._tok.encode(text, add_special_tokens=add_special, split_special_tokens=not parse_special))

    def detokenize(self, tokens: list[int]) -> str:
        return self._tok.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def special_token_id(self, text: str) -> int | None:
        ids = self.tokenize(text, parse_special=True)
        if len(ids) == 1 and self.tokenize(text, parse_special=False) != ids:
            return ids[0]
        return None

    def encode_prompt(self, text: str) -> list[int]:
        ids = self.tokenize(text, parse_special=True)
        if self._bos is not None and (not ids or ids[0] != self._bos):
            ids.insert(0, self._bos)
        return ids

    # --- constrained decoding ------------------------------------------------------------------
    def check_constraint(self, constraint: Constraint) -> None:
        self._grammars.compile(constraint)

    # --- generation ----------------------------------------------------------------------------
    def generate(self, prompt: list[int], params: SamplingParams, cancel: threading.Event) -> Generation:
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) + params.max_tokens > self.n_ctx:
            raise ValueError(f"{len(prompt)} prompt tokens + {params.max_tokens} max_tokens exceed the context of {self.n_ctx}")
        bad = [t for t in prompt if not 0 <= t < self.n_vocab]
        if bad:
            raise ValueError(f"token ids must be between 0 and {self.n_vocab - 1} (got {bad[0]})")
        mask = self._grammars.matcher(params.constraint) if params.constraint is not None else None
        generation = Generation(prompt_tokens=len(prompt), cached_tokens=self._prefix.match(prompt), steps=iter(()))
        generation.steps = self._steps(list(prompt), params, mask, cancel, generation)
        return generation

    def _forward(self, ids: list[int], cache: Any) -> torch.Tensor:
        """Feed ``ids`` after what ``cache`` holds; the logits of the last position (float32, shape [vocab])."""
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self._model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache})
        return out.logits[0, -1].float()

    def _forward_rows(self, ids: list[int], cache: Any) -> torch.Tensor:
        """Feed ``ids`` after what ``cache`` holds; the logits of every one of them ([len(ids), vocab])."""
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self._model(input_ids=input_ids, use_cache=True, logits_to_keep=len(ids), **{self._cache_kwarg: cache})
        return out.logits[0].float()

    def _steps(self, prompt: list[int], params: SamplingParams, mask: TokenMask | None, cancel: threading.Event,
               generation: Generation) -> Iterator[Step]:
        cache, reused = self._prefix.take(prompt, reserve=len(prompt) + params.max_tokens)
        generation.cached_tokens = reused
        fed = prompt[:reused]  # what the cache holds, kept in step with it
        sampler = _Sampler(params, self.n_vocab, self.device)
        detok = _Detokenizer(self.detokenize)
        # drafting needs a cache that can be cut back; a grammar would have to be checked row by row
        policy = DraftPolicy() if self.prompt_lookup and mask is None and reusable(cache) else None
        generation.finish_reason = "length"
        try:
            with torch.inference_mode():
                logits = None
                for start in range(reused, len(prompt), PREFILL_CHUNK):
                    if cancel.is_set():
                        generation.finish_reason = "cancelled"
                        return
                    chunk = prompt[start:start + PREFILL_CHUNK]
                    logits = self._forward(chunk, cache)
                    fed.extend(chunk)
                assert logits is not None  # at least one prompt token is always fed (see PrefixCache)
                picked = [sampler.pick(logits, mask, params.top_logprobs, self.detokenize)]
                while True:
                    ended = False
                    for token, logprob in picked:
                        if token in self._eog:
                            generation.finish_reason = "stop"
                            ended = True
                            break
                        if mask is not None:
                            mask.accept(token)
                        generation.completion_tokens += 1
                        yield Step(token, detok.push(token), logprob)
                        if cancel.is_set():
                            generation.finish_reason = "cancelled"
                            ended = True
                            break
                        if generation.completion_tokens >= params.max_tokens:
                            ended = True
                            break
                    if ended:
                        break
                    token = picked[-1][0]
                    room = min(params.max_tokens - generation.completion_tokens, self.n_ctx - len(fed) - 1)
                    draft: list[int] = []
                    match = 0
                    if policy is not None and room > 0:
                        found, match = find_draft(np.array(fed + [token], dtype=np.int64), min(room, policy.k_max))
                        if match:
                            draft = [int(t) for t in found[: policy.want(match)]]
                    started = time.perf_counter()
                    if not draft:
                        logits = self._forward([token], cache)
                        fed.append(token)
                        picked = [sampler.pick(logits, mask, params.top_logprobs, self.detokenize)]
                        if policy is not None:
                            policy.plain_step(time.perf_counter() - started)
                        continue
                    rows = self._forward_rows([token, *draft], cache)
                    base = len(fed) + 1
                    picked = []
                    for j, guess in enumerate(draft):
                        picked.append(sampler.pick(rows[j], mask, params.top_logprobs, self.detokenize))
                        if picked[-1][0] != guess:
                            break
                    else:
                        picked.append(sampler.pick(rows[len(draft)], mask, params.top_logprobs, self.detokenize))
                    accepted = len(picked) - 1
                    truncate(cache, base + accepted)  # the cache keeps ``token`` and the accepted guesses
                    fed.extend([token, *draft[:accepted]])
                    assert policy is not None
                    policy.checked(match, len(draft), accepted, time.perf_counter() - started)
                    generation.drafted, generation.accepted = policy.drafted, policy.accepted
            tail = detok.flush()
            if tail:
                yield Step(-1, tail)
        finally:
            # the cache is kept only when it holds exactly ``fed`` (a failed forward pass leaves it broken)
            if kv_length(cache) == len(fed):
                self._prefix.put(fed, len(prompt), cache)

    def close(self) -> None:
        self._prefix.clear()
        self._model = None  # type: ignore[assignment]
        if self.device == "cuda":
            torch.cuda.empty_cache()


class _Sampler:
    """Picks each token: penalties, grammar mask, temperature and top-p, from a per-request generator."""

    def __init__(self, params: SamplingParams, n_vocab: int, device: str) -> None:
        self.params = params
        self.generator = torch.Generator(device=device)
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))
        penalised = params.presence_penalty != 0 or params.frequency_penalty != 0
        self.counts = torch.zeros(n_vocab, dtype=torch.float32, device=device) if penalised else None

    def pick(self, logits: torch.Tensor, mask: TokenMask | None, top_logprobs: int | None,
             detokenize: Any) -> tuple[int, TokenLogprob | None]:
        p = self.params
        raw = logits
        if self.counts is not None:
            logits = logits - self.counts * p.frequency_penalty - (self.counts > 0).float() * p.presence_penalty
        elif mask is not None:
            logits = logits.clone()  # the mask writes in place; logprobs read the model's own logits
        if mask is not None:
            mask.apply(logits)
        if p.temperature <= 0:
            token = int(torch.argmax(logits))
        else:
            probs = torch.softmax(logits / p.temperature, dim=-1)
            if p.top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True)
                drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > p.top_p
                sorted_probs[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        if self.counts is not None:
            self.counts[token] += 1
        return token, (_logprob(raw, token, top_logprobs, detokenize) if top_logprobs is not None else None)


def _logprob(logits: torch.Tensor, token: int, top_n: int, detokenize: Any) -> TokenLogprob:
    logprobs = torch.log_softmax(logits, dim=-1)
    top: tuple[tuple[str, float], ...] = ()
    if top_n > 0:
        values, ids = torch.topk(logprobs, top_n)
        top = tuple((detokenize([int(i)]), float(v)) for v, i in zip(values.tolist(), ids.tolist()))
    return TokenLogprob(detokenize([token]), float(logprobs[token]), top)
