"""Prompt lookup in the Transformers engine (tiny random Qwen2 folder): lossless and seed-stable."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from servr.engines.base import SamplingParams
from tiny_qwen_hf import hf_folder_from_gguf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engines(tiny_qwen_path: Path) -> Any:
    from servr.engines.transformers import TransformersEngine

    folder = hf_folder_from_gguf(tiny_qwen_path)
    made = {lookup: TransformersEngine(folder, model_id="tiny-qwen", n_ctx=2048, n_threads=1, prompt_lookup=lookup,
                                       prefix_slots=0)
            for lookup in (False, True)}
    yield made
    for e in made.values():
        e.close()


def _run(engine: Any, prompt: list[int], **params: Any) -> tuple[list[int], Any]:
    gen = engine.generate(prompt, SamplingParams(**params), threading.Event())
    return [s.token_id for s in gen.steps if s.token_id >= 0], gen


def _prompt(engine: Any) -> list[int]:
    text = "def scale(values):\n    return [v * 2 for v in values]\n"
    return engine.tokenize(text * 8)


def _oracle(monkeypatch: pytest.MonkeyPatch, prompt: list[int], truth: list[int]) -> None:
    """Random weights copy nothing, so drafts come from a scripted drafter: the known answer with
    every fourth guess wrong, to exercise accepted runs, rejections and cutting the cache back."""
    import numpy as np

    import servr.engines.transformers as hf

    def find_draft(tokens: np.ndarray, k: int, **_: Any) -> tuple[np.ndarray, int]:
        at = len(tokens) - len(prompt)  # tokens = prompt + answer so far
        guess = [t + 1 if (at + i) % 4 == 3 else t for i, t in enumerate(truth[at: at + k])]
        return np.array(guess, dtype=np.int64), 8

    monkeypatch.setattr(hf, "find_draft", find_draft)


def test_greedy_output_is_the_same_with_and_without_lookup(engines: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = _prompt(engines[False])
    plain, _ = _run(engines[False], prompt, max_tokens=96, temperature=0.0)
    fast, gen = _run(engines[True], prompt, max_tokens=96, temperature=0.0)
    assert fast == plain  # the real drafter: random weights copy nothing, so little or nothing is drafted
    _oracle(monkeypatch, prompt, plain)
    fast, gen = _run(engines[True], prompt, max_tokens=96, temperature=0.0)
    assert fast == plain
    assert 0 < gen.accepted < gen.drafted


def test_a_seed_gives_the_same_sample_with_and_without_lookup(engines: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = _prompt(engines[False])
    kw = dict(max_tokens=64, temperature=0.8, top_p=0.95, seed=11)
    plain, _ = _run(engines[False], prompt, **kw)
    _oracle(monkeypatch, prompt, plain)
    fast, gen = _run(engines[True], prompt, **kw)
    assert fast == plain and gen.accepted > 0


def test_logprobs_and_max_tokens_hold_while_drafting(engines: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = _prompt(engines[False])
    _oracle(monkeypatch, prompt, _run(engines[False], prompt, max_tokens=60, temperature=0.0)[0])
    gen = engines[True].generate(prompt, SamplingParams(max_tokens=37, temperature=0.0, top_logprobs=2),
                                 threading.Event())
    steps = [s for s in gen.steps if s.token_id >= 0]
    assert len(steps) <= 37 and all(s.logprob is not None and len(s.logprob.top) == 2 for s in steps)
    plain = engines[False].generate(prompt, SamplingParams(max_tokens=37, temperature=0.0, top_logprobs=2),
                                    threading.Event())
    assert [s.logprob.logprob for s in steps] == pytest.approx(
        [s.logprob.logprob for s in plain.steps if s.token_id >= 0], abs=1e-4)
    assert gen.accepted > 0
