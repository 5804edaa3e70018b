"""The workspace boundary: resolve_path and the race-safe I/O helpers, on real trees."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from stagecrew.tools.base import ToolContext, WorkspaceError
from stagecrew.tools.paths import (
    display_path,
    is_within,
    open_dir,
    read_if_exists,
    resolve_path,
    safe_listdir,
    safe_open_read,
    safe_read_bytes,
    safe_unlink,
    safe_write_bytes,
    verify_fd,
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    (w / "sub").mkdir(parents=True)
    (w / "a.txt").write_text("alpha\n")
    (w / "sub" / "b.txt").write_text("beta\n")
    return w


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret.txt").write_text("SECRET\n")
    return o


@pytest.fixture
def ctx(ws: Path) -> ToolContext:
    return ToolContext(workspace=ws)


def test_is_within_is_component_wise() -> None:
    assert is_within("/w", "/w")
    assert is_within("/w/x/y", "/w")
    assert not is_within("/w2/x", "/w")
    assert not is_within("/", "/w")
    assert is_within("/anything", "/")


def test_relative_and_absolute_inside(ctx: ToolContext, ws: Path) -> None:
    assert resolve_path(ctx, "a.txt") == ws / "a.txt"
    assert resolve_path(ctx, "./sub/../a.txt") == ws / "a.txt"
    assert resolve_path(ctx, str(ws / "sub" / "b.txt")) == ws / "sub" / "b.txt"
    assert resolve_path(ctx, ".") == ws
    assert resolve_path(ctx, "new/dir/file.txt") == ws / "new" / "dir" / "file.txt"


def test_relative_paths_ignore_bash_cwd(ctx: ToolContext, ws: Path) -> None:
    ctx.cwd = ws / "sub"
    assert resolve_path(ctx, "a.txt") == ws / "a.txt"


def test_dotdot_and_absolute_outside_refused(ctx: ToolContext, ws: Path) -> None:
    with pytest.raises(WorkspaceError) as err:
        resolve_path(ctx, "../x")
    assert str(err.value) == (
        f"path '../x' is outside the workspace {ws}; file tools only work inside it"
    )
    for bad in ("/etc/passwd", "sub/../../outside", str(ws) + "2/x", "~/x", "/"):
        with pytest.raises(WorkspaceError, match="outside the workspace"):
            resolve_path(ctx, bad)


def test_nul_byte_refused(ctx: ToolContext) -> None:
    with pytest.raises(WorkspaceError, match="NUL"):
        resolve_path(ctx, "a\x00b")


def test_symlinks_pointing_out_refused_anywhere_in_chain(
    ctx: ToolContext, ws: Path, outside: Path
) -> None:
    (ws / "link_file").symlink_to(outside / "secret.txt")
    (ws / "link_dir").symlink_to(outside)
    (ws / "sub" / "nested").symlink_to("../link_dir")  # relative, through another link
    (ws / "dangling").symlink_to(outside / "does-not-exist")
    for bad in ("link_file", "link_dir/secret.txt", "sub/nested/secret.txt", "dangling"):
        with pytest.raises(WorkspaceError, match="through a symlink"):
            resolve_path(ctx, bad)


def test_symlink_inside_resolves_to_target(ctx: ToolContext, ws: Path) -> None:
    (ws / "alias").symlink_to("sub")
    assert resolve_path(ctx, "alias/b.txt") == ws / "sub" / "b.txt"


def test_workspace_reached_through_a_symlink(tmp_path: Path, ws: Path) -> None:
    alias = tmp_path / "alias-ws"
    alias.symlink_to(ws)
    ctx = ToolContext(workspace=alias)  # ToolContext stores the real path
    assert resolve_path(ctx, str(alias / "a.txt")) == ws / "a.txt"


def test_must_exist(ctx: ToolContext) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_path(ctx, "nope.txt", must_exist=True)


def test_display_path(ctx: ToolContext, ws: Path) -> None:
    assert display_path(ctx, ws) == "."
    assert display_path(ctx, ws / "sub" / "b.txt") == "sub/b.txt"
    assert display_path(ctx, "/etc") == "/etc"


def test_safe_read_write_roundtrip(ctx: ToolContext, ws: Path) -> None:
    target = ws / "deep" / "er" / "c.txt"
    created: list[Path] = []
    assert safe_write_bytes(ctx, target, b"hello", created_dirs=created) == 5
    assert created == [ws / "deep", ws / "deep" / "er"]
    assert safe_read_bytes(ctx, target) == b"hello"
    assert read_if_exists(ctx, ws / "nothing") is None
    # No temporary files are left next to the target.
    assert sorted(p.name for p in target.parent.iterdir()) == ["c.txt"]


def test_write_keeps_permissions(ctx: ToolContext, ws: Path) -> None:
    script = ws / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o750)
    safe_write_bytes(ctx, script, b"#!/bin/sh\necho hi\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o750


def test_write_is_atomic_replace(ctx: ToolContext, ws: Path) -> None:
    """The old inode is never written into: a reader holding it still sees the old bytes."""
    f = ws / "a.txt"
    with open(f, "rb") as held:
        safe_write_bytes(ctx, f, b"new contents\n")
        assert held.read() == b"alpha\n"
    assert f.read_bytes() == b"new contents\n"


def test_read_refuses_directories_and_fifos(ctx: ToolContext, ws: Path) -> None:
    with pytest.raises(IsADirectoryError), safe_open_read(ctx, ws / "sub"):
        pass
    os.mkfifo(ws / "pipe")
    with pytest.raises(OSError, match="not a regular file"), safe_open_read(ctx, ws / "pipe"):
        pass
    with pytest.raises(IsADirectoryError):
        safe_write_bytes(ctx, ws / "sub", b"x")


def test_unlink_removes_link_not_target(ctx: ToolContext, ws: Path) -> None:
    (ws / "l").symlink_to("a.txt")
    safe_unlink(ctx, ws / "l")
    assert not (ws / "l").exists()
    assert (ws / "a.txt").read_text() == "alpha\n"
    with pytest.raises(FileNotFoundError):
        safe_unlink(ctx, ws / "l")


def test_listdir_reports_links(ctx: ToolContext, ws: Path, outside: Path) -> None:
    (ws / "out").symlink_to(outside)
    entries = {e.name: e for e in safe_listdir(ctx, ws)}
    assert entries["sub"].is_dir
    assert entries["a.txt"].size == 6
    assert entries["out"].link_target == str(outside)


# ---- the race: the path is checked, then swapped for a symlink before the open -------------


def test_file_swapped_for_symlink_after_check(ctx: ToolContext, ws: Path, outside: Path) -> None:
    checked = resolve_path(ctx, "a.txt")
    os.unlink(ws / "a.txt")
    (ws / "a.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(WorkspaceError, match="symbolic link"), safe_open_read(ctx, checked):
        pass
    with pytest.raises(WorkspaceError, match="symbolic link"):
        safe_write_bytes(ctx, checked, b"pwned")
    assert (outside / "secret.txt").read_text() == "SECRET\n"


def test_directory_swapped_for_symlink_after_check(
    ctx: ToolContext, ws: Path, outside: Path
) -> None:
    checked = resolve_path(ctx, "sub/secret.txt")
    (ws / "sub" / "b.txt").unlink()
    (ws / "sub").rmdir()
    (ws / "sub").symlink_to(outside)
    with pytest.raises(WorkspaceError, match="symbolic link"):
        safe_read_bytes(ctx, checked)
    with pytest.raises(WorkspaceError, match="symbolic link"):
        safe_write_bytes(ctx, checked, b"pwned")
    with pytest.raises(WorkspaceError, match="symbolic link"):
        safe_unlink(ctx, checked)
    assert (outside / "secret.txt").read_text() == "SECRET\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_verify_fd_refuses_descriptor_outside(ctx: ToolContext, outside: Path) -> None:
    fd = os.open(outside / "secret.txt", os.O_RDONLY)
    try:
        with pytest.raises(WorkspaceError, match="outside the workspace"):
            verify_fd(ctx, fd, ctx.workspace / "a.txt")
    finally:
        os.close(fd)


def test_open_dir_refuses_paths_outside(ctx: ToolContext, outside: Path) -> None:
    with pytest.raises(WorkspaceError):
        open_dir(ctx, outside)
