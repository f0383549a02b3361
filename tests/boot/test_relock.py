"""The tested locks (boot/constraints.txt, boot/constraints-peers.txt) and what boot/relock.py makes of pip's list."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from boot import relock

REPO = Path(__file__).resolve().parents[2]


def test_the_lock_pins_every_dependency_and_the_dev_extra_within_pyprojects_ranges() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = relock.read_lock(relock.LOCK)
    missing, outside = [], []
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        pin = pins.get(relock.canonical(req.name))
        if pin is None:
            missing.append(req.name)
        elif not req.specifier.contains(pin[1], prereleases=True):
            outside.append(f"{req} locked at {pin[1]}")
    # either one: pyproject.toml changed after the lock was made; python3 boot/relock.py makes it again
    assert (missing, outside) == ([], [])


def test_the_lock_pins_torch_without_a_build_label_and_leaves_the_project_out() -> None:
    pins = relock.read_lock(relock.LOCK)
    assert "+" not in pins["torch"][1]
    assert relock.PROJECT not in pins


def test_the_peers_lock_pins_mini_swe_agent_and_its_dependencies() -> None:
    pins = relock.read_lock(relock.PEERS_LOCK)
    assert "mini-swe-agent" in pins and "litellm" in pins


def test_pip_list_becomes_pins_without_the_project_or_local_labels() -> None:
    listed = [{"name": "torch", "version": "2.13.0+cpu"}, {"name": "local-coder", "version": "0.1.0"},
              {"name": "Llama_CPP.python", "version": "0.3.36"}, {"name": "pip", "version": "26.3"}]
    assert relock.pins_from_pip_list(listed) == {
        "torch": ("torch", "2.13.0"), "llama-cpp-python": ("Llama_CPP.python", "0.3.36"), "pip": ("pip", "26.3")}


def test_a_rendered_lock_reads_back_sorted_with_its_header(tmp_path: Path) -> None:
    pins = {"zlib-ng": ("zlib_ng", "1.0"), "anyio": ("anyio", "4.1.0")}
    path = tmp_path / "lock.txt"
    path.write_text(relock.render_lock(pins, ["made today", ""]))
    assert path.read_text() == "# made today\n#\nanyio==4.1.0\nzlib_ng==1.0\n"
    assert relock.read_lock(path) == pins


def test_a_lock_line_that_is_not_an_exact_pin_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lock.txt"
    path.write_text("anyio>=4\n")
    with pytest.raises(ValueError, match="not a name==version line: 'anyio>=4'"):
        relock.read_lock(path)


def test_moved_names_each_change_added_and_removed_package() -> None:
    old = {"anyio": ("anyio", "4.1.0"), "gone": ("gone", "1.0"), "same": ("same", "2.0")}
    new = {"anyio": ("anyio", "4.2.0"), "fresh": ("Fresh", "0.1"), "same": ("same", "2.0")}
    assert relock.moved(old, new) == ["  anyio 4.1.0 -> 4.2.0", "+ Fresh 0.1", "- gone 1.0"]
    assert relock.moved(new, new) == []
