"""Saved KV states of llama.cpp's one sequence, so interleaved sessions keep their prefix reuse.

llama.cpp reuses the longest common prefix of the new prompt with what its KV cache holds, but it
holds one sequence: agent A's turn, then agent B's, then A's again would re-evaluate A's whole
conversation. Before a prompt overwrites a long cached sequence, the engine saves that sequence
here (``llama_state_seq_get_data``: only the used KV cells, no logits); a later prompt that shares
a longer prefix with a saved state than with the live one restores it (``llama_state_seq_set_data``)
and evaluates only the rest. States live in host memory, least recently used dropped first, capped
by bytes: a 7B model's KV is about 56 KiB a token (f16), so 10k tokens of conversation is ~0.55 GiB.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import llama_cpp
import numpy as np

log = logging.getLogger(__name__)

DEFAULT_STATE_CACHE_BYTES = 2 << 30  # host memory for saved states
DEFAULT_STATE_MIN_TOKENS = 128  # below this, evaluating again costs less than keeping a copy
SEQ = 0  # llama-cpp-python uses sequence 0 only


@dataclass
class SavedState:
    tokens: np.ndarray  # the token ids the KV cells hold, in order (int32)
    data: Any  # ctypes uint8 array from llama_state_seq_get_data

    @property
    def nbytes(self) -> int:
        return ctypes.sizeof(self.data) + self.tokens.nbytes


def common_prefix(a: np.ndarray, b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != np.asarray(b[:n], dtype=a.dtype))
    return int(diff[0]) if diff.size else n


class StateCache:
    """An LRU of saved sequence states of one ``Llama``, at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int = DEFAULT_STATE_CACHE_BYTES, min_tokens: int = DEFAULT_STATE_MIN_TOKENS) -> None:
        if max_bytes < 0 or min_tokens < 1:
            raise ValueError("the state cache needs max_bytes >= 0 and min_tokens >= 1")
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._states: OrderedDict[int, SavedState] = OrderedDict()
        self._next_key = 0
        self.saves = 0
        self.restores = 0
        self._lock = threading.Lock()  # /health reads while the worker thread saves

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def describe(self) -> dict[str, Any]:
        return {"entries": len(self._states), "bytes": self.nbytes, "max_bytes": self.max_bytes,
                "min_tokens": self.min_tokens, "saves": self.saves, "restores": self.restores}

    def prepare(self, llm: Any, prompt: Sequence[int]) -> None:
        """Before ``llm.generate(prompt)``: keep the live sequence if the prompt would overwrite much
        of it, and restore a saved one that shares a longer prefix with the prompt."""
        if self.max_bytes == 0:
            return
        live = np.asarray(llm.input_ids[: llm.n_tokens], dtype=np.int32)
        live_common = common_prefix(live, prompt)
        best_key, best_common = None, live_common
        for key, state in self._states.items():
            common = common_prefix(state.tokens, prompt)
            if common > best_common:
                best_key, best_common = key, common
        chosen = None
        if best_key is not None and best_common - live_common >= self.min_tokens:
            with self._lock:  # out first: saving the live sequence may need its room
                chosen = self._states.pop(best_key)
        if len(live) - live_common >= self.min_tokens:
            self._save(llm, live)
        if chosen is not None:
            self._restore(llm, chosen)

    def _save(self, llm: Any, tokens: np.ndarray) -> None:
        size = llama_cpp.llama_state_seq_get_size(llm._ctx.ctx, SEQ)
        if size + tokens.nbytes > self.max_bytes:
            return
        data = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(llm._ctx.ctx, data, size, SEQ)
        if written == 0 or written > size:
            log.warning("llama.cpp could not copy the KV state (%d of %d bytes); not kept", written, size)
            return
        state = SavedState(tokens.copy(), data)
        with self._lock:
            # an older turn of the same conversation is a prefix of this one: it is no longer needed
            for key in [k for k, s in self._states.items() if common_prefix(s.tokens, tokens) == len(s.tokens)]:
                del self._states[key]
            self._states[self._next_key] = state
            self._next_key += 1
            self.saves += 1
            while sum(s.nbytes for s in self._states.values()) > self.max_bytes:
                self._states.popitem(last=False)

    def _restore(self, llm: Any, state: SavedState) -> None:
        llm._ctx.kv_cache_seq_rm(-1, -1, -1)
        size = ctypes.sizeof(state.data)
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, state.data, size, SEQ) == 0:
            log.warning("llama.cpp could not restore a saved KV state; evaluating the prompt in full")
            llm.reset()
            llm._ctx.kv_cache_seq_rm(-1, -1, -1)
            return
        n = len(state.tokens)
        llm.input_ids[:n] = state.tokens
        llm.n_tokens = n
        llm._requires_eval = True  # the logits are not this state's: the last token is evaluated again
        self.restores += 1
