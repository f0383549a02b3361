"""The Transformers engine on the tiny random Qwen2 (as a Hugging Face folder and as its GGUF).

Prefix reuse is proven by output, not speed: a turn decoded on a reused cache gives exactly the
tokens a fresh cache gives.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import jsonschema
import pytest

from core.errors import ConfigError, ModelNotFound
from servr.chat_template import ChatRenderer
from servr.engines.base import Constraint, SamplingParams, ToolSpec
from servr_helpers import settings
from tiny_qwen_hf import hf_folder_from_gguf

pytestmark = pytest.mark.slow

WEATHER = ToolSpec("get_weather", {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 16}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"], "additionalProperties": False})
CLOCK = ToolSpec("get_time", {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]})
REPORT = {"type": "object",
          "properties": {"title": {"type": "string", "maxLength": 12},
                         "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
                         "score": {"type": "number"}, "ok": {"type": "boolean"}},
          "required": ["title", "tags", "ok"], "additionalProperties": False}


@pytest.fixture(scope="module")
def hf_folder(tiny_qwen_path: Path) -> Path:
    return hf_folder_from_gguf(tiny_qwen_path)


@pytest.fixture(scope="module")
def engine(hf_folder: Path):
    from servr.engines.transformers import TransformersEngine

    e = TransformersEngine(hf_folder, model_id="tiny-qwen", n_ctx=2048, n_threads=1)
    yield e
    e.close()


@pytest.fixture(scope="module")
def no_reuse_engine(hf_folder: Path):
    from servr.engines.transformers import TransformersEngine

    e = TransformersEngine(hf_folder, model_id="tiny-qwen", n_ctx=2048, prefix_slots=0, n_threads=1)
    yield e
    e.close()


def _run(engine, prompt: list[int], cancel: threading.Event | None = None, **params):
    params.setdefault("max_tokens", 12)
    params.setdefault("temperature", 0.0)
    gen = engine.generate(prompt, SamplingParams(**params), cancel or threading.Event())
    steps = list(gen.steps)
    return gen, steps


def _ids(steps) -> list[int]:
    return [s.token_id for s in steps if s.token_id >= 0]


def _text(steps) -> str:
    return "".join(s.text for s in steps)


def _prompt(engine, messages) -> list[int]:
    return engine.encode_prompt(ChatRenderer(engine.chat_template()).render(messages))


def test_loads_the_folder_with_its_tokenizer_template_and_qwen_tokens(engine) -> None:
    d = engine.describe()
    assert (d["backend"], d["device"], d["dtype"], d["n_gpu_layers"]) == ("transformers", "cpu", "float32", 0)
    assert (d["n_ctx"], d["n_ctx_train"], d["n_vocab"], d["fim"]) == (2048, 32768, 151936, True)
    assert engine.chat_template().origin == "tokenizer"
    assert engine.chat_template().source.startswith("{%- if tools %}")
    assert engine.tokenize("<tool_call>") == [151657]
    assert engine.tokenize("<|im_end|>") == [151645]
    assert engine.tokenize("<|im_end|>", parse_special=False) != [151645]
    assert engine.special_token_id("<|fim_prefix|>") == 151659 and engine.special_token_id("hello") is None
    assert engine.encode_prompt("hi") == engine.tokenize("hi")  # Qwen adds no BOS
    assert engine.detokenize(engine.tokenize("<|im_start|>user\nÄpfel 🍎<|im_end|>")) == "<|im_start|>user\nÄpfel 🍎<|im_end|>"


def test_streamed_pieces_add_up_to_the_decoded_tokens(engine) -> None:
    prompt = _prompt(engine, [{"role": "user", "content": "Schreib etwas auf Japanisch: 日本語"}])
    gen, steps = _run(engine, prompt, max_tokens=40, temperature=1.0, seed=3)
    assert gen.completion_tokens == len(_ids(steps)) == 40
    assert _text(steps) == engine.detokenize(_ids(steps))


def test_second_turn_reuses_the_first_and_decodes_exactly_as_without_reuse(engine, no_reuse_engine) -> None:
    turn1 = [{"role": "user", "content": "Read main.py and tell me what it does."}]
    p1 = _prompt(engine, turn1)
    g1, s1 = _run(engine, p1)
    assert g1.cached_tokens < len(p1)  # at most the template's default system prompt, from earlier tests
    turn2 = turn1 + [{"role": "assistant", "content": _text(s1)}, {"role": "user", "content": "Now fix the bug."}]
    p2 = _prompt(engine, turn2)
    assert p2[:len(p1)] == p1
    g2, s2 = _run(engine, p2, max_tokens=16)
    assert len(p1) <= g2.cached_tokens < len(p2)
    g_fresh, s_fresh = _run(no_reuse_engine, p2, max_tokens=16)
    assert g_fresh.cached_tokens == 0
    assert _ids(s2) == _ids(s_fresh) and len(_ids(s2)) == 16
    # the same request again reuses all but the one token whose logits start the answer
    g3, s3 = _run(engine, p2, max_tokens=16)
    assert g3.cached_tokens == len(p2) - 1 and _ids(s3) == _ids(s_fresh)


def test_two_interleaved_sessions_both_hit(engine, no_reuse_engine) -> None:
    def turn(history, question):
        history.append({"role": "user", "content": question})
        prompt = _prompt(engine, history)
        gen, steps = _run(engine, prompt)
        history.append({"role": "assistant", "content": _text(steps)})
        return prompt, gen, steps

    a: list[dict] = [{"role": "system", "content": "You review Python code."}]
    b: list[dict] = [{"role": "system", "content": "You write SQL queries for a shop database."}]
    pa1, _, _ = turn(a, "Look at utils.py.")
    pb1, gb1, _ = turn(b, "List the customers.")
    pa2, ga2, sa2 = turn(a, "And models.py?")
    pb2, gb2, sb2 = turn(b, "Only those from Paris.")
    assert ga2.cached_tokens >= len(pa1) and gb2.cached_tokens >= len(pb1)
    # b's first turn shared only the template's opening with a's conversation, and a's entry survived it
    assert 0 < gb1.cached_tokens < len(pb1)
    assert _ids(sa2) == _ids(_run(no_reuse_engine, pa2)[1])
    assert _ids(sb2) == _ids(_run(no_reuse_engine, pb2)[1])


def test_cancel_stops_after_the_current_token_and_the_cache_stays_usable(engine, no_reuse_engine) -> None:
    prompt = _prompt(engine, [{"role": "user", "content": "Write a very long essay."}])
    cancel = threading.Event()
    gen = engine.generate(prompt, SamplingParams(max_tokens=500, temperature=0.0), cancel)
    first = next(gen.steps)
    cancel.set()
    rest = list(gen.steps)
    assert gen.finish_reason == "cancelled" and gen.completion_tokens == 1 and all(s.token_id == -1 for s in rest)
    again, steps = _run(engine, prompt, max_tokens=6)
    assert again.cached_tokens == len(prompt) - 1
    assert _ids(steps) == _ids(_run(no_reuse_engine, prompt, max_tokens=6)[1]) and _ids(steps)[0] == first.token_id


def test_cancel_before_the_first_token_generates_nothing(engine) -> None:
    cancel = threading.Event()
    cancel.set()
    gen, steps = _run(engine, engine.tokenize("hello"), cancel=cancel)
    assert (steps, gen.finish_reason, gen.completion_tokens) == ([], "cancelled", 0)


def test_max_tokens_ends_with_length(engine) -> None:
    gen, steps = _run(engine, engine.tokenize("count: 1, 2,"), max_tokens=3, temperature=1.0, seed=1)
    assert (gen.finish_reason, gen.completion_tokens, len(_ids(steps))) == ("length", 3, 3)


def test_seed_repeats_the_sample_and_another_seed_changes_it(engine) -> None:
    prompt = engine.tokenize("Once upon a time")
    one = _ids(_run(engine, prompt, temperature=1.0, top_p=0.9, seed=42)[1])
    assert one == _ids(_run(engine, prompt, temperature=1.0, top_p=0.9, seed=42)[1])
    assert one != _ids(_run(engine, prompt, temperature=1.0, top_p=0.9, seed=43)[1])


@pytest.mark.parametrize(("presence", "frequency", "picks"), [
    (0.0, 0.0, [5, 5, 5]), (0.6, 0.0, [5, 7, 5]), (0.0, 0.3, [5, 5, 7]), (0.2, 0.2, [5, 5, 7])])
def test_penalties_lower_tokens_by_presence_and_count(presence: float, frequency: float, picks: list[int]) -> None:
    import torch

    from servr.engines.transformers import _Sampler

    logits = torch.zeros(10)
    logits[5], logits[7] = 1.0, 0.5
    sampler = _Sampler(SamplingParams(max_tokens=3, temperature=0.0, presence_penalty=presence,
                                      frequency_penalty=frequency), 10, "cpu")
    assert [sampler.pick(logits, None, None, str)[0] for _ in range(3)] == picks
    assert logits[5] == 1.0  # the model's logits are left as they were


def test_logprobs_are_the_chosen_tokens_with_sorted_alternatives(engine) -> None:
    gen, steps = _run(engine, engine.tokenize("hello"), max_tokens=4, top_logprobs=3)
    for step in steps:
        lp = step.logprob
        assert lp is not None and lp.token == engine.detokenize([step.token_id]) and lp.logprob <= 0
        assert len(lp.top) == 3 and [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
        assert lp.top[0][0] == lp.token  # greedy: the chosen token is the most likely one


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_required_tool_call_always_parses_and_validates(engine, seed: int) -> None:
    from core.toolparse import parse_tool_calls

    constraint = Constraint("tool_call", tools=(WEATHER, CLOCK))
    gen, steps = _run(engine, engine.tokenize("Weather?"), max_tokens=120, temperature=1.0, seed=seed,
                      constraint=constraint)
    assert gen.finish_reason == "stop"
    text = _text(steps)
    assert text.startswith("<tool_call>\n{") and text.endswith("}\n</tool_call>")
    call = json.loads(text[len("<tool_call>\n"):-len("\n</tool_call>")])
    schema = {"get_weather": WEATHER.parameters, "get_time": CLOCK.parameters}[call["name"]]
    jsonschema.validate(call["arguments"], schema)
    parsed = parse_tool_calls(text, ["get_weather", "get_time"])
    assert [c.name for c in parsed.calls] == [call["name"]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_validates(engine, seed: int) -> None:
    gen, steps = _run(engine, engine.tokenize("JSON:"), max_tokens=150, temperature=1.0, seed=seed,
                      constraint=Constraint("json_schema", schema=REPORT))
    assert gen.finish_reason == "stop"
    jsonschema.validate(json.loads(_text(steps)), REPORT)


def test_json_object_constraint_gives_an_object(engine) -> None:
    gen, steps = _run(engine, engine.tokenize("JSON:"), max_tokens=150, temperature=0.7, seed=1,
                      constraint=Constraint("json"))
    assert gen.finish_reason == "stop" and isinstance(json.loads(_text(steps)), dict)


def test_unusable_schema_is_a_value_error_naming_it(engine) -> None:
    with pytest.raises(ValueError, match="JSON schema"):
        engine.check_constraint(Constraint("json_schema", schema={"type": "object", "properties": {"a": {"$ref": "#/nope"}}}))
    with pytest.raises(ValueError, match="at least one tool"):
        engine.check_constraint(Constraint("tool_call"))


def test_prompt_beyond_the_context_is_a_value_error(engine) -> None:
    with pytest.raises(ValueError, match="exceed the context of 2048"):
        engine.generate([1] * 2000, SamplingParams(max_tokens=100), threading.Event())
    with pytest.raises(ValueError, match="empty"):
        engine.generate([], SamplingParams(max_tokens=1), threading.Event())


def test_load_errors_say_what_to_pass(tmp_path: Path, hf_folder: Path) -> None:
    from servr.engines.transformers import TransformersEngine

    with pytest.raises(ModelNotFound, match="no config.json"):
        TransformersEngine(tmp_path, model_id="x")
    with pytest.raises(ConfigError, match="trained for 32768"):
        TransformersEngine(hf_folder, model_id="x", n_ctx=65536)
    with pytest.raises(ConfigError, match="needs an NVIDIA GPU"):
        TransformersEngine(hf_folder, model_id="x", device="cpu", load_in_4bit=True)


def test_backend_choice_for_folders_and_ggufs(tmp_path: Path, hf_folder: Path, tiny_qwen_path: Path) -> None:
    from servr.engines import pick_backend

    assert pick_backend(settings(), hf_folder) == "transformers"
    assert pick_backend(settings(), tiny_qwen_path) == "llamacpp"
    assert pick_backend(settings(backend="transformers"), tiny_qwen_path) == "transformers"
    with pytest.raises(ConfigError, match="not a .gguf file"):
        pick_backend(settings(backend="llamacpp"), hf_folder)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(ConfigError, match="cannot tell which backend"):
        pick_backend(settings(), other)


def test_gguf_file_loads_directly_and_decodes_like_the_folder(tiny_qwen_path: Path, engine, no_reuse_engine) -> None:
    from servr.engines import load_engine

    direct = load_engine(settings(backend="transformers", ctx=1024, model="tiny-gguf", threads=1), tiny_qwen_path)
    try:
        assert direct.describe()["backend"] == "transformers" and direct.model_id == "tiny-gguf"
        assert direct.chat_template().source == engine.chat_template().source
        prompt = _prompt(direct, [{"role": "user", "content": "hello"}])
        assert prompt == _prompt(engine, [{"role": "user", "content": "hello"}])
        assert _ids(_run(direct, prompt)[1]) == _ids(_run(no_reuse_engine, prompt)[1])
    finally:
        direct.close()
