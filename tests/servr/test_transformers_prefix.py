"""The prefix cache's policy on real DynamicCache objects (no model): what is reused, kept, copied and evicted."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from servr.engines.hf_prefix import PrefixCache, kv_length, new_dynamic_cache  # noqa: E402

CONFIG = transformers.Qwen2Config(num_hidden_layers=2, hidden_size=8, num_attention_heads=2, num_key_value_heads=1,
                                  intermediate_size=16, vocab_size=100)


def _filled(tokens: list[int]):
    """A cache whose position i holds the value tokens[i] (so copies and cuts can be read back)."""
    cache = new_dynamic_cache(CONFIG)()
    values = torch.tensor(tokens, dtype=torch.float32).view(1, 1, -1, 1).expand(1, 1, -1, 4).contiguous()
    for layer in range(CONFIG.num_hidden_layers):
        cache.update(values.clone(), values.clone(), layer)
    return cache


def _held(cache) -> list[int]:
    return [int(v) for v in cache.layers[1].keys[0, 0, :, 0]]


def _prefix(slots: int = 4, max_tokens: int = 1000) -> PrefixCache:
    return PrefixCache(new_dynamic_cache(CONFIG), slots=slots, max_tokens=max_tokens)


def test_continuing_conversation_takes_the_entry_and_cuts_its_answer_tail() -> None:
    pc = _prefix()
    pc.put([1, 2, 3, 4, 5, 6], prompt_len=4, cache=_filled([1, 2, 3, 4, 5, 6]))
    prompt = [1, 2, 3, 4, 5, 9, 9]  # the client re-sent the answer differently from token 6 on
    assert pc.match(prompt) == 5
    cache, reused = pc.take(prompt, reserve=10)
    assert reused == 5 and _held(cache) == [1, 2, 3, 4, 5] and kv_length(cache) == 5
    assert len(pc) == 0  # taken, not copied


def test_a_prompt_sharing_part_of_another_prompt_copies_and_leaves_it() -> None:
    pc = _prefix()
    theirs = _filled([1, 2, 3, 4, 5, 6])
    pc.put([1, 2, 3, 4, 5, 6], prompt_len=5, cache=theirs)
    cache, reused = pc.take([1, 2, 7, 8], reserve=10)
    assert reused == 2 and _held(cache) == [1, 2] and cache is not theirs
    assert len(pc) == 1 and _held(theirs) == [1, 2, 3, 4, 5, 6]


def test_the_last_prompt_token_is_always_left_to_encode() -> None:
    pc = _prefix()
    pc.put([1, 2, 3], prompt_len=3, cache=_filled([1, 2, 3]))
    assert pc.match([1, 2, 3]) == 2
    assert pc.match([5, 6]) == 0
    cache, reused = pc.take([5, 6], reserve=4)
    assert reused == 0 and kv_length(cache) == 0 and len(pc) == 1


def test_longest_match_wins_among_sessions() -> None:
    pc = _prefix()
    pc.put([1, 2, 3, 4], prompt_len=4, cache=_filled([1, 2, 3, 4]))
    pc.put([1, 2, 8, 9], prompt_len=4, cache=_filled([1, 2, 8, 9]))
    cache, reused = pc.take([1, 2, 3, 4, 10], reserve=5)
    assert reused == 4 and _held(cache) == [1, 2, 3, 4]


def test_eviction_by_slots_and_by_token_budget_oldest_first() -> None:
    pc = _prefix(slots=2, max_tokens=12)
    for first in (10, 20, 30):
        pc.put([first, first + 1, first + 2], prompt_len=3, cache=_filled([first, first + 1, first + 2]))
    assert len(pc) == 2 and pc.match([10, 11, 12, 0]) == 0 and pc.match([30, 31, 32, 0]) == 3
    pc.take([40, 41], reserve=8)  # 6 stored + 8 coming > 12: the oldest goes
    assert len(pc) == 1 and pc.match([30, 31, 32, 0]) == 3


def test_an_entry_extended_by_a_new_one_is_replaced() -> None:
    pc = _prefix()
    pc.put([1, 2], prompt_len=2, cache=_filled([1, 2]))
    pc.put([1, 2, 3, 4], prompt_len=3, cache=_filled([1, 2, 3, 4]))
    assert len(pc) == 1


def test_a_cache_that_does_not_hold_its_tokens_is_dropped() -> None:
    pc = _prefix()
    broken = _filled([1, 2, 3])
    broken.layers[1].keys = broken.layers[1].keys[..., :2, :]  # as after a forward pass that failed midway
    assert kv_length(broken) == -1
    pc.put([1, 2, 3], prompt_len=3, cache=broken)
    assert len(pc) == 0


def test_no_slots_means_no_reuse() -> None:
    pc = _prefix(slots=0)
    pc.put([1, 2, 3], prompt_len=3, cache=_filled([1, 2, 3]))
    assert len(pc) == 0 and pc.match([1, 2, 3, 4]) == 0
