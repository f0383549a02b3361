"""Constrained decoding for the Transformers engine: a :class:`Constraint` compiled by xgrammar.

xgrammar compiles a JSON schema (or the ``<tool_call>`` wrapper around one) against the model's
vocabulary once; a per-generation matcher then fills a bitmask of the tokens allowed next, which
is applied to the logits on the CPU or the GPU. Whitespace between JSON tokens is fixed (compact
separators), so a model cannot wander in blanks until ``max_tokens``. The tool-call shape matches
the llama.cpp engine's grammar: ``name`` is one of the offered tools and ``arguments`` is bound to
that tool's schema, so a completed call always parses and validates.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from typing import Any

import torch
import xgrammar as xgr

from servr.engines.base import Constraint, tool_call_schema

_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_SEPARATORS = (", ", ": ")


def _schema_grammar(schema: dict[str, Any]) -> xgr.Grammar:
    return xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, separators=_SEPARATORS)


def constraint_grammar(constraint: Constraint) -> xgr.Grammar:
    """The grammar of ``constraint``; ``ValueError`` naming the problem when the schema cannot be used."""
    try:
        if constraint.kind == "json":
            return _schema_grammar(_ANY_OBJECT)
        if constraint.kind == "json_schema":
            return _schema_grammar(constraint.schema or _ANY_OBJECT)
        if not constraint.tools:
            raise ValueError("a tool_call constraint needs at least one tool")
        return xgr.Grammar.concat(
            xgr.Grammar.from_ebnf('root ::= "<tool_call>\\n"'),
            _schema_grammar(tool_call_schema(constraint)),
            xgr.Grammar.from_ebnf('root ::= "\\n</tool_call>"'),
        )
    except ValueError:
        raise
    except (RuntimeError, TypeError, KeyError, xgr.InvalidJSONError) as exc:
        raise ValueError(f"the JSON schema cannot be turned into a grammar ({type(exc).__name__}: {exc})") from None


class GrammarCache:
    """Compiles constraints for one tokenizer and keeps the last few compiled grammars."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int], keep: int = 32) -> None:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self._vocab_size = vocab_size
        self._keep = keep
        self._compiled: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()

    def compile(self, constraint: Constraint) -> xgr.CompiledGrammar:
        key = json.dumps(dataclasses.asdict(constraint), sort_keys=True)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        grammar = constraint_grammar(constraint)
        try:
            compiled = self._compiler.compile_grammar(grammar)
        except RuntimeError as exc:
            raise ValueError(f"the JSON schema cannot be compiled into a grammar ({exc})") from None
        self._compiled[key] = compiled
        while len(self._compiled) > self._keep:
            self._compiled.popitem(last=False)
        return compiled

    def matcher(self, constraint: Constraint) -> "TokenMask":
        return TokenMask(self.compile(constraint), self._vocab_size)


class TokenMask:
    """The tokens one generation may pick next, as its grammar advances."""

    def __init__(self, compiled: xgr.CompiledGrammar, vocab_size: int) -> None:
        self._matcher = xgr.GrammarMatcher(compiled)
        self._vocab_size = vocab_size
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def apply(self, logits: torch.Tensor) -> None:
        """Set the logits (shape ``[vocab]``) of every token the grammar forbids to -inf, in place."""
        self._matcher.fill_next_token_bitmask(self._bitmask)
        mask = self._bitmask if logits.device.type == "cpu" else self._bitmask.to(logits.device, non_blocking=True)
        xgr.apply_token_bitmask_inplace(logits.view(1, -1), mask, vocab_size=self._vocab_size)

    def accept(self, token: int) -> None:
        if not self._matcher.accept_token(token):
            raise RuntimeError(f"the grammar rejected token {token}, which its own mask allowed")

    @property
    def finished(self) -> bool:
        """The grammar accepted a stop token: the constrained text is complete."""
        return bool(self._matcher.is_terminated())
