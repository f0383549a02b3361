"""Workspace confinement: what resolves, what is refused, and the race between check and use."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import core.paths
from core.errors import ToolError
from core.paths import (PathEscape, ProtectedPath, confined_dir, open_confined, relative_to_workspace,
                        resolve_in_workspace, write_atomic)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "inside.txt").write_text("inside\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "secret.txt").write_text("secret\n")
    (out / "sub" / "inside.txt").write_text("outside twin\n")
    return out


def swap_after_check(monkeypatch: pytest.MonkeyPatch, swap) -> list[Path]:
    """Make every check succeed first, then run ``swap`` before the checked path is used."""
    real_check = core.paths.resolve_in_workspace
    checked: list[Path] = []

    def check_then_swap(root, path):
        result = real_check(root, path)
        checked.append(result)
        swap()
        return result

    monkeypatch.setattr(core.paths, "resolve_in_workspace", check_then_swap)
    return checked


def replace_folder_with_link(folder: Path, target: Path):
    def swap() -> None:
        folder.rename(folder.with_name(folder.name + ".moved"))
        folder.symlink_to(target, target_is_directory=True)
    return swap


# --- resolve_in_workspace ----------------------------------------------------------------------

def test_a_relative_path_resolves_inside(ws):
    assert resolve_in_workspace(ws, "sub/inside.txt") == ws.resolve() / "sub" / "inside.txt"
    assert resolve_in_workspace(ws, "sub/../sub/./inside.txt") == ws.resolve() / "sub" / "inside.txt"
    assert resolve_in_workspace(ws, "") == ws.resolve()
    assert resolve_in_workspace(ws, "new/not/yet.txt") == ws.resolve() / "new" / "not" / "yet.txt"


@pytest.mark.parametrize("path", ["..", "../outside/secret.txt", "sub/../../outside", "sub/../.."])
def test_dot_dot_leading_out_is_refused(ws, outside, path):
    with pytest.raises(PathEscape, match="is outside the workspace"):
        resolve_in_workspace(ws, path)


def test_an_absolute_path_outside_is_refused(ws, outside):
    with pytest.raises(PathEscape, match="is outside the workspace") as info:
        resolve_in_workspace(ws, str(outside / "secret.txt"))
    assert "relative to the workspace root" in info.value.hint


def test_an_absolute_path_inside_is_refused_with_the_relative_name_to_use(ws):
    with pytest.raises(PathEscape) as info:
        resolve_in_workspace(ws, str(ws / "sub" / "inside.txt"))
    assert info.value.hint == "paths are relative to the workspace root: use 'sub/inside.txt'"


@pytest.mark.parametrize("path", ["~", "~/x.txt", "~root/.bashrc"])
def test_home_paths_are_refused(ws, path):
    with pytest.raises(PathEscape) as info:
        resolve_in_workspace(ws, path)
    assert "'~' is not expanded" in info.value.hint


def test_a_nul_byte_is_refused(ws):
    with pytest.raises(ToolError, match="NUL byte"):
        resolve_in_workspace(ws, "sub/a\x00b")


def test_a_symlink_to_a_file_outside_is_refused(ws, outside):
    (ws / "link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PathEscape, match="'link.txt' leads outside the workspace through a symbolic link"):
        resolve_in_workspace(ws, "link.txt")


def test_a_symlink_to_a_folder_outside_is_refused_for_every_path_through_it(ws, outside):
    (ws / "out").symlink_to(outside, target_is_directory=True)
    for path in ("out", "out/secret.txt", "out/sub/new.txt"):
        with pytest.raises(PathEscape, match="through a symbolic link"):
            resolve_in_workspace(ws, path)


def test_a_symlink_inside_pointing_inside_resolves_to_its_target(ws):
    (ws / "alias").symlink_to(ws / "sub", target_is_directory=True)
    assert resolve_in_workspace(ws, "alias/inside.txt") == ws.resolve() / "sub" / "inside.txt"


def test_the_workspace_root_itself_may_be_reached_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.txt").write_text("a")
    (tmp_path / "via").symlink_to(real, target_is_directory=True)
    assert resolve_in_workspace(tmp_path / "via", "a.txt") == real.resolve() / "a.txt"
    assert relative_to_workspace(tmp_path / "via", real.resolve() / "a.txt") == "a.txt"


# --- open_confined -----------------------------------------------------------------------------

def test_open_confined_reads_and_writes_inside(ws):
    with open_confined(ws, "sub/inside.txt") as f:
        assert f.read() == "inside\n"
    with open_confined(ws, "deep/er/new.txt", "w", create_parents=True) as f:
        f.write("new\n")
    assert (ws / "deep" / "er" / "new.txt").read_text() == "new\n"


def test_open_confined_refuses_symlinks_out_for_files_and_folders(ws, outside):
    (ws / "link.txt").symlink_to(outside / "secret.txt")
    (ws / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscape):
        open_confined(ws, "link.txt")
    with pytest.raises(PathEscape):
        open_confined(ws, "link.txt", "w")
    with pytest.raises(PathEscape):
        open_confined(ws, "out/secret.txt")
    with pytest.raises(PathEscape):
        open_confined(ws, "out/planted.txt", "w")
    assert (outside / "secret.txt").read_text() == "secret\n"
    assert not (outside / "planted.txt").exists()


def test_open_confined_refuses_a_folder_swapped_for_a_symlink_after_the_check(ws, outside, monkeypatch):
    checked = swap_after_check(monkeypatch, replace_folder_with_link(ws / "sub", outside / "sub"))
    with pytest.raises(PathEscape, match="'sub/inside.txt' goes through a symbolic link that was not checked"):
        open_confined(ws, "sub/inside.txt")
    assert checked == [ws.resolve() / "sub" / "inside.txt"]  # the check passed: the refusal is at use time
    assert (ws / "sub").is_symlink()


def test_open_confined_refuses_writing_into_a_folder_swapped_after_the_check(ws, outside, monkeypatch):
    swap_after_check(monkeypatch, replace_folder_with_link(ws / "sub", outside / "sub"))
    with pytest.raises(PathEscape):
        open_confined(ws, "sub/planted.txt", "w")
    assert not (outside / "sub" / "planted.txt").exists()


def test_open_confined_refuses_a_file_swapped_for_a_symlink_after_the_check(ws, outside, monkeypatch):
    target = ws / "sub" / "inside.txt"

    def swap() -> None:
        target.unlink()
        target.symlink_to(outside / "secret.txt")

    swap_after_check(monkeypatch, swap)
    with pytest.raises(PathEscape, match="goes through a symbolic link"):
        open_confined(ws, "sub/inside.txt", "w")
    assert (outside / "secret.txt").read_text() == "secret\n"


def test_open_confined_explains_missing_files_and_folders(ws):
    with pytest.raises(ToolError, match="'sub/nope.txt' does not exist"):
        open_confined(ws, "sub/nope.txt")
    with pytest.raises(ToolError, match="the folder of 'nope/a.txt' does not exist"):
        open_confined(ws, "nope/a.txt")
    with pytest.raises(ToolError, match="'sub/inside.txt' is a file, not a folder, so 'sub/inside.txt/x' cannot exist"):
        open_confined(ws, "sub/inside.txt/x")


def test_open_confined_refuses_folders_and_the_root(ws):
    with pytest.raises(ToolError, match="'sub' is a folder, not a file"):
        open_confined(ws, "sub")
    with pytest.raises(ToolError, match="is the workspace folder, not a file"):
        open_confined(ws, ".")


def test_open_confined_refuses_a_fifo_without_hanging(ws):
    os.mkfifo(ws / "pipe")
    with pytest.raises(ToolError, match="'pipe' is not a regular file"):
        open_confined(ws, "pipe")
    with pytest.raises(ToolError, match="'pipe' is not a regular file"):
        open_confined(ws, "pipe", "w")


def test_open_confined_exclusive_create_says_the_file_exists(ws):
    with pytest.raises(ToolError, match="'sub/inside.txt' already exists"):
        open_confined(ws, "sub/inside.txt", "x")


def test_a_missing_workspace_is_named(tmp_path):
    with pytest.raises(ToolError, match="the workspace folder .* does not exist"):
        open_confined(tmp_path / "gone", "a.txt")


# --- confined_dir ------------------------------------------------------------------------------

def test_confined_dir_gives_a_descriptor_of_the_folder(ws):
    with confined_dir(ws, "sub") as fd:
        assert os.listdir(fd) == ["inside.txt"]
    with confined_dir(ws) as fd:
        assert sorted(os.listdir(fd)) == ["sub"]


def test_confined_dir_on_a_file_says_it_is_a_file(ws):
    with pytest.raises(ToolError, match="^'sub/inside.txt' is a file, not a folder \\(") as info:
        with confined_dir(ws, "sub/inside.txt"):
            pass
    assert info.value.hint == "read_file shows its content"


def test_confined_dir_refuses_a_symlinked_folder_outside(ws, outside):
    (ws / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscape):
        with confined_dir(ws, "out"):
            pass


def test_confined_dir_refuses_a_folder_swapped_after_the_check(ws, outside, monkeypatch):
    swap_after_check(monkeypatch, replace_folder_with_link(ws / "sub", outside / "sub"))
    with pytest.raises(PathEscape, match="goes through a symbolic link"):
        with confined_dir(ws, "sub"):
            pass


# --- write_atomic ------------------------------------------------------------------------------

def test_write_atomic_creates_then_replaces_keeping_the_mode(ws):
    assert write_atomic(ws, "a/b/new.sh", b"echo 1\n") is True
    target = ws / "a" / "b" / "new.sh"
    target.chmod(0o750)
    assert write_atomic(ws, "a/b/new.sh", b"echo 2\n") is False
    assert target.read_bytes() == b"echo 2\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert sorted(os.listdir(ws / "a" / "b")) == ["new.sh"]  # no temporary file left behind


def test_write_atomic_refuses_a_symlink_inside_pointing_out(ws, outside):
    (ws / "link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PathEscape):
        write_atomic(ws, "link.txt", b"overwritten")
    assert (outside / "secret.txt").read_text() == "secret\n"
    assert (ws / "link.txt").is_symlink()


def test_write_atomic_writes_through_a_symlink_that_stays_inside(ws):
    (ws / "alias.txt").symlink_to(ws / "sub" / "inside.txt")
    assert write_atomic(ws, "alias.txt", b"changed\n") is False
    assert (ws / "alias.txt").is_symlink()
    assert (ws / "sub" / "inside.txt").read_text() == "changed\n"


def test_write_atomic_refuses_a_folder_swapped_after_the_check(ws, outside, monkeypatch):
    swap_after_check(monkeypatch, replace_folder_with_link(ws / "sub", outside / "sub"))
    with pytest.raises(PathEscape):
        write_atomic(ws, "sub/inside.txt", b"planted")
    assert (outside / "sub" / "inside.txt").read_text() == "outside twin\n"
    assert os.listdir(outside / "sub") == ["inside.txt"]


def test_write_atomic_refuses_a_folder_as_the_target(ws):
    with pytest.raises(ToolError, match="'sub' is a folder, not a file"):
        write_atomic(ws, "sub", b"x")
    with pytest.raises(ToolError, match="is the workspace folder"):
        write_atomic(ws, "", b"x")


# --- protected names: checked on the components actually opened ----------------------------------

@pytest.fixture
def with_secret(ws: Path) -> Path:
    (ws / ".env").write_text("GEMINI_API_KEY=sk-secret\n")
    (ws / "ok.txt").write_text("ok\n")
    return ws


def test_a_link_resolving_to_dotenv_is_refused_by_open_and_write(with_secret):
    (with_secret / "link").symlink_to(".env")
    with pytest.raises(ProtectedPath):
        open_confined(with_secret, "link")
    with pytest.raises(ProtectedPath):
        write_atomic(with_secret, "link", b"AGENT_SANDBOX=off\n")
    assert (with_secret / ".env").read_text() == "GEMINI_API_KEY=sk-secret\n"
    (with_secret / "link2").symlink_to("ok.txt")  # control: the same link to a normal file works
    assert open_confined(with_secret, "link2").read() == "ok\n"


def test_a_link_flipped_to_dotenv_after_the_tools_check_is_refused_at_open(with_secret, monkeypatch):
    # the file tools call refuse_protected() first; a swap after it must not reach .env
    (with_secret / "link").symlink_to("ok.txt")
    assert core.paths.refuse_protected(with_secret, "link") == with_secret / "ok.txt"
    (with_secret / "link").unlink()
    (with_secret / "link").symlink_to(".env")
    with pytest.raises(ProtectedPath):
        open_confined(with_secret, "link")


def test_a_hard_link_to_dotenv_is_refused_by_identity(with_secret):
    os.link(with_secret / ".env", with_secret / "innocent.txt")
    with pytest.raises(ProtectedPath, match="secrets and settings file"):
        open_confined(with_secret, "innocent.txt")
    with pytest.raises(ProtectedPath):
        write_atomic(with_secret, "innocent.txt", b"x")
    assert open_confined(with_secret, "ok.txt").read() == "ok\n"


def test_git_is_read_but_never_written(ws):
    (ws / ".git" / "hooks").mkdir(parents=True)
    (ws / ".git" / "config").write_text("[core]\n")
    assert open_confined(ws, ".git/config").read() == "[core]\n"
    for mode in ("w", "a", "r+"):
        with pytest.raises(ProtectedPath, match="git runs hooks"):
            open_confined(ws, ".git/config", mode)
    with pytest.raises(ProtectedPath):
        write_atomic(ws, ".git/hooks/pre-commit", b"#!/bin/sh\n")
    with pytest.raises(ProtectedPath):
        write_atomic(ws, "sub/.git/config", b"")  # a nested repository too
    assert not (ws / ".git" / "hooks" / "pre-commit").exists()
    write_atomic(ws, "sub/gitnotes.txt", b"fine")  # control
    assert (ws / "sub" / "gitnotes.txt").read_bytes() == b"fine"


def test_confined_dir_refuses_the_agents_state(ws):
    (ws / ".agent").mkdir()
    with pytest.raises(ProtectedPath):
        with confined_dir(ws, ".agent"):
            pass


def test_openat2_and_the_component_walk_open_the_same_folders(ws, outside):
    (ws / "sub" / "deeper").mkdir()
    (ws / "sub" / "deeper" / "f.txt").write_text("deep\n")
    (ws / "sub" / "out").symlink_to(outside)
    usable = core.paths._OPENAT2.usable
    try:
        for walker in (True, False):
            core.paths._OPENAT2.usable = usable and walker
            assert open_confined(ws, "sub/deeper/f.txt").read() == "deep\n"
            with pytest.raises(OSError) as failed:  # a link on the way, as after a swap: never followed
                core.paths._walk_dirs(os.path.realpath(ws), ["sub", "out", "sub"], create=False)
            assert failed.value.errno in (errno.ELOOP, errno.ENOTDIR)
    finally:
        core.paths._OPENAT2.usable = usable
