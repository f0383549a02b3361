"""Prefix KV reuse for the Transformers engine: the past key values of the last few conversations.

An agent resends its whole, growing conversation every turn. Each finished generation leaves its
KV cache here, with the tokens it holds (prompt + the generated tokens fed back). The next prompt
takes the entry sharing the longest prefix and only its new suffix is encoded.

An entry is consumed in place when the new prompt continues its conversation (the shared prefix
covers the entry's whole prompt: only that entry's generated tail is cut off, which the client
re-sends in its own rendering). When the prompt only shares a part of an entry's prompt (two
sessions with one system prompt, an edited history), the shared part is copied and the entry is
kept for its own conversation. Entries are evicted least recently used, by count and so that the
stored tokens plus the coming generation stay within a token budget (on a GPU: the context the
memory plan sized the KV cache for).

Only plain (non-sliding) ``DynamicCache`` layers can be cut at any length; a model with other
cache layers (sliding window, linear attention) gets no reuse, which is slower but never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


@dataclass
class _Entry:
    tokens: list[int]  # what the cache holds, in order
    prompt_len: int  # how many of them were the prompt that made the entry
    cache: Any


def kv_length(cache: Any) -> int:
    """Tokens held by every layer of ``cache``, or -1 when the layers disagree (a forward pass failed midway)."""
    lengths = {0 if layer.keys is None or not layer.is_initialized else int(layer.keys.shape[-2])
               for layer in cache.layers}
    return lengths.pop() if len(lengths) == 1 else -1


def truncate(cache: Any, n: int) -> None:
    """Keep the first ``n`` positions of every layer, in place."""
    for layer in cache.layers:
        if layer.is_initialized and layer.keys is not None:
            layer.keys = layer.keys[..., :n, :]
            layer.values = layer.values[..., :n, :]


def copy_prefix(cache: Any, n: int, new_cache: Callable[[], Any]) -> Any:
    """A new cache holding copies of the first ``n`` positions of ``cache``."""
    out = new_cache()
    for idx, layer in enumerate(cache.layers):
        out.update(layer.keys[..., :n, :].clone(), layer.values[..., :n, :].clone(), idx)
    return out


def reusable(cache: Any) -> bool:
    """Whether ``cache`` can be cut at any position (every layer a plain dynamic one)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """A small LRU of KV caches keyed by the tokens they hold."""

    def __init__(self, new_cache: Callable[[], Any], *, slots: int, max_tokens: int) -> None:
        self._new_cache = new_cache
        self.slots = slots
        self.max_tokens = max_tokens
        self._entries: list[_Entry] = []  # oldest first
        self.enabled = slots > 0 and reusable(new_cache())

    @property
    def stored_tokens(self) -> int:
        return sum(len(e.tokens) for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _best(self, prompt: list[int]) -> tuple[int, int]:
        """(index of the entry to reuse or -1, how many prompt tokens it covers)."""
        best, reuse = -1, 0
        for i, entry in enumerate(self._entries):
            # at least one prompt token is always encoded: its logits start the generation
            n = min(_common(entry.tokens, prompt), len(prompt) - 1)
            if n > reuse or (n == reuse and n > 0):  # ties: the most recent entry
                best, reuse = i, n
        return best, reuse

    def match(self, prompt: list[int]) -> int:
        """How many tokens of ``prompt`` :meth:`take` will reuse."""
        return self._best(prompt)[1] if self.enabled else 0

    def take(self, prompt: list[int], reserve: int) -> tuple[Any, int]:
        """A cache to continue ``prompt`` from and how many of its tokens it holds; room is made for ``reserve`` tokens."""
        if not self.enabled:
            return self._new_cache(), 0
        index, reuse = self._best(prompt)
        cache = None
        if index >= 0:
            entry = self._entries[index]
            if reuse >= entry.prompt_len - 1:  # the same conversation, one turn on: cut its generated tail
                del self._entries[index]
                truncate(entry.cache, reuse)
                cache = entry.cache
            else:  # a shared prefix of someone else's conversation: copy it, keep theirs
                cache = copy_prefix(entry.cache, reuse, self._new_cache)
        while self._entries and self.stored_tokens + reserve > self.max_tokens:
            self._entries.pop(0)
        return (cache, reuse) if cache is not None else (self._new_cache(), 0)

    def put(self, tokens: list[int], prompt_len: int, cache: Any) -> None:
        """Keep ``cache`` (holding ``tokens``) as the most recent entry; a cache in a broken state is dropped."""
        if not self.enabled or not tokens or kv_length(cache) != len(tokens) or len(tokens) > self.max_tokens:
            return
        # an older entry that this one extends holds nothing this one lacks
        self._entries = [e for e in self._entries if _common(e.tokens, tokens) < len(e.tokens)]
        self._entries.append(_Entry(list(tokens), prompt_len, cache))
        while len(self._entries) > self.slots or self.stored_tokens > self.max_tokens:
            self._entries.pop(0)

    def clear(self) -> None:
        self._entries.clear()


def new_dynamic_cache(config: Any) -> Callable[[], Any]:
    """A factory of empty caches shaped for ``config`` (its layer types decide what can be reused)."""
    return lambda: DynamicCache(config=config)
