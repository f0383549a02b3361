"""The memory and skills subcommands ship with the program: always offered."""

from __future__ import annotations

import importlib.util

from boot.cli import SUBCOMMANDS, available_subcommands, build_parser


def test_memory_and_skills_are_offered_even_when_a_module_lookup_finds_nothing(monkeypatch):
    # the old guard hid a subcommand whose module find_spec could not see; nothing is hidden now
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    offered = available_subcommands()
    assert offered == SUBCOMMANDS
    assert {"memory", "skills"} <= set(offered)
    epilog = build_parser().epilog or ""
    assert "memory: " in epilog and "skills: " in epilog
