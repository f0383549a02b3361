"""Small parts of the server on their own: stop strings, model ids, grammars, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from servr.engines.base import Constraint, ToolSpec, model_id_from_path
from servr.generation import StopMatcher

REPO = Path(__file__).resolve().parents[2]


def test_stop_string_split_across_pieces_is_held_back_then_cut() -> None:
    m = StopMatcher(["</end>"])
    assert m.push("hello </e") == ("hello ", False)
    assert m.push("nd> more") == ("", True)


def test_text_that_only_looked_like_a_stop_string_is_released() -> None:
    m = StopMatcher(["STOP"])
    assert m.push("ST") == ("", False)
    assert m.push("AY") == ("STAY", False)
    assert m.push("S") == ("", False)
    assert m.flush() == "S"


def test_earliest_of_several_stop_strings_wins() -> None:
    m = StopMatcher(["b", "a"])
    assert m.push("xxaxb") == ("xx", True)


def test_model_id_from_file_name() -> None:
    assert model_id_from_path(Path("SmolLM2-135M-Instruct.Q4_1.gguf")) == "smollm2-135m-instruct-q4_1"
    assert model_id_from_path(Path("/m/qwen2.5-coder-7b-instruct-q4_k_m.gguf")) == "qwen2-5-coder-7b-instruct-q4_k_m"
    assert model_id_from_path(Path("/m/Qwen2.5-Coder-1.5B-Instruct")) == "qwen2-5-coder-1-5b-instruct"


def test_small_integer_ranges_become_enums_the_grammar_enforces() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from servr.grammar import _bounded_integers, to_gbnf

    schema = {"type": "object", "properties": {"days": {"type": "integer", "minimum": 1, "exclusiveMaximum": 4},
                                               "n": {"type": "integer", "minimum": 0, "maximum": 10**6}}}
    rewritten = _bounded_integers(schema)
    assert rewritten["properties"]["days"] == {"enum": [1, 2, 3]}
    assert rewritten["properties"]["n"] == schema["properties"]["n"]  # too wide: left to the converter
    grammar = to_gbnf(Constraint("tool_call", tools=(ToolSpec("f", schema),)))
    assert grammar.startswith('root ::= "<tool_call>\\n" call "\\n</tool_call>"')
    assert '"\\"f\\""' in grammar


def test_importing_the_server_imports_no_backend() -> None:
    code = ("import sys, servr.app, servr.engines; "
            "print(sorted(m for m in ('llama_cpp', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_job_cancelled_while_waiting_never_runs_and_its_skipped_callback_does() -> None:
    import threading

    from servr.scheduler import Scheduler

    scheduler = Scheduler(4)
    release, ran, skipped = threading.Event(), [], threading.Event()
    scheduler.submit(lambda cancel: release.wait(10))
    waiting = scheduler.submit(lambda cancel: ran.append(1), skipped.set)
    waiting.cancel.set()
    release.set()
    assert waiting.done.wait(10) and skipped.is_set() and ran == []
    scheduler.close()


def test_flash_attention_is_on_exactly_when_layers_go_to_the_gpu(tmp_path: Path) -> None:
    import inspect

    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from llama_cpp import Llama

    from servr.engines.llama_cpp import llama_arguments

    def args(layers: int) -> dict:
        return llama_arguments(tmp_path / "m.gguf", n_ctx=4096, n_threads=2, n_gpu_layers=layers, n_batch=512)

    # always on: the GPU memory plan counts on it, and on the CPU it makes batched rows the same bits as single ones
    assert args(-1)["flash_attn"] is True and args(20)["flash_attn"] is True and args(0)["flash_attn"] is True
    # every name is one the installed llama-cpp-python takes (a misspelt keyword would be swallowed by **kwargs)
    assert set(args(-1)) <= set(inspect.signature(Llama.__init__).parameters)
