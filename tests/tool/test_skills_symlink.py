"""A ``skills`` symlink (which sandboxed code can make) is refused, never followed, by every skills file operation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tool.skills.files import SkillStore
from tool.skills.loader import SkillLoader
from tool.skills.schema import SkillInvalid

BODY = '''def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first
        b: the second
    """
    return a + b
'''


def _save(store: SkillStore, name: str = "add") -> None:
    store.save(name, "add", BODY, source="lib/add.py", function_sha256="0" * 64, description="Add two numbers.")


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, Path]:
    """(workspace, outside folder) where workspace/skills is a link to the outside folder."""
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    workspace.mkdir()
    outside.mkdir()
    return workspace, outside


def _link(workspace: Path, target: Path) -> None:
    os.symlink(target, workspace / "skills")


def test_save_through_a_skills_link_writes_nothing_outside(linked: tuple[Path, Path]) -> None:
    workspace, outside = linked
    _link(workspace, outside)
    with pytest.raises(SkillInvalid, match="symbolic link"):
        _save(SkillStore(workspace), "usercustomize")
    assert list(outside.iterdir()) == []


def test_save_through_a_link_to_a_folder_inside_the_workspace_is_refused_too(linked: tuple[Path, Path]) -> None:
    workspace, _ = linked
    (workspace / "elsewhere").mkdir()
    _link(workspace, workspace / "elsewhere")
    with pytest.raises(SkillInvalid, match="symbolic link"):
        _save(SkillStore(workspace))
    assert list((workspace / "elsewhere").iterdir()) == []


def test_remove_and_restore_and_manifest_refuse_a_link_swapped_in_after_saving(linked: tuple[Path, Path]) -> None:
    workspace, outside = linked
    store = SkillStore(workspace)
    _save(store)
    _save(store)
    # the sandboxed code moves the real folder away and leaves a link to a copy outside
    os.rename(workspace / "skills", outside / "real")
    _link(workspace, outside / "real")
    before = sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*"))
    with pytest.raises(SkillInvalid, match="symbolic link"):
        store.remove("add")
    with pytest.raises(SkillInvalid, match="symbolic link"):
        store.restore("add", 1)
    with pytest.raises(SkillInvalid, match="symbolic link"):
        store.manifest()
    with pytest.raises(SkillInvalid, match="symbolic link"):
        store.ensure()
    assert sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*")) == before
    assert (outside / "real" / "add.py").is_file()




def test_loader_does_not_scan_through_a_skills_link(linked: tuple[Path, Path]) -> None:
    workspace, outside = linked
    (outside / "add.py").write_text(BODY, encoding="utf-8")
    _link(workspace, outside)
    notices: list[str] = []
    loader = SkillLoader(workspace=workspace, reserved=lambda: [], on_notice=notices.append, embedder=None)
    assert loader.scan() == []
    assert loader.tools() == []
    assert len(notices) == 1
    assert "symbolic link" in notices[0] and "not loaded" in notices[0]


def test_loader_still_loads_a_real_skills_folder(linked: tuple[Path, Path]) -> None:
    workspace, _ = linked
    (workspace / "skills").mkdir()
    (workspace / "skills" / "add.py").write_text(BODY, encoding="utf-8")
    loader = SkillLoader(workspace=workspace, reserved=lambda: [], embedder=None)
    assert [s.name for s in loader.scan() if s.ok] == ["add"]


@pytest.mark.parametrize("path", [".agent/add.py", "sub/.agent/add.py"])
def test_promote_skill_does_not_read_the_agents_own_state(tmp_path: Path, path: str) -> None:
    from boot.settings import Settings
    from core.paths import ProtectedPath
    from tool.skills.promote import promote
    from tool.skills.runner import SkillRunner

    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(BODY, encoding="utf-8")
    runner = SkillRunner(Settings(workspace=tmp_path))
    with pytest.raises(ProtectedPath, match="the file tools do not read or write it"):
        promote(tmp_path, runner, (), path, "add")
    assert not (tmp_path / "skills").exists()
