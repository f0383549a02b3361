"""The Transformers engine drives the KV cache through the API the installed transformers declares.

transformers 5.24 renamed ``forward``'s ``past_key_values`` to ``cache`` (the old name warns with a
FutureWarning, and goes at 5.40); the oldest allowed, 5.18, knows only ``past_key_values``. The suite's own filter
lets DeprecationWarning through, so these tests record every warning themselves.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest

from servr.engines.base import SamplingParams
from tiny_qwen_hf import hf_folder_from_gguf

pytestmark = pytest.mark.slow

DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@pytest.fixture(scope="module")
def hf_folder(tiny_qwen_path: Path) -> Path:
    return hf_folder_from_gguf(tiny_qwen_path)


def _deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    return [f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}"
            for w in caught if issubclass(w.category, DEPRECATIONS)]


def test_loading_and_two_turns_on_a_reused_cache_warn_of_no_deprecation(hf_folder: Path) -> None:
    from servr.engines.transformers import TransformersEngine

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = TransformersEngine(hf_folder, model_id="tiny-qwen", n_ctx=1024, n_threads=1)
        try:
            prompt = engine.encode_prompt("<|im_start|>user\nWrite a loop.<|im_end|>\n<|im_start|>assistant\n")
            first = engine.generate(prompt, SamplingParams(max_tokens=6, temperature=0.0), threading.Event())
            answer = [s.token_id for s in first.steps if s.token_id >= 0]
            follow_up = prompt + answer + engine.encode_prompt("<|im_end|>\n<|im_start|>user\nAgain.<|im_end|>\n")
            second = engine.generate(follow_up, SamplingParams(max_tokens=6, temperature=0.0), threading.Event())
            list(second.steps)
        finally:
            engine.close()
    assert _deprecations(caught) == []
    # the cache handed to forward is the one the model filled: the second turn continues it
    assert second.cached_tokens >= len(prompt)

