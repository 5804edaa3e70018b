"""Adversarial: every file tool tries to leave the workspace, and none may.

A sibling directory holds a sentinel with known contents. After every attempt the test proves
that nothing there changed (contents, metadata, the listing) and that the sentinel's text never
appeared in what a tool returned.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagecrew.tools import search
from stagecrew.tools.base import ToolContext, WorkspaceError, execute
from stagecrew.tools.files import apply_patch_sync
from stagecrew.tools.paths import (
    resolve_path,
    safe_listdir,
    safe_read_bytes,
    safe_rmdir,
    safe_unlink,
    safe_write_bytes,
)
from stagecrew.tools.registry import default_tools

TOOLS = default_tools()
SECRET = "TOP-SECRET-SENTINEL-42"


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    (o / "dir").mkdir(parents=True)
    (o / "secret.txt").write_text(f"{SECRET}\n")
    (o / "dir" / "inner.txt").write_text(f"{SECRET} inner\n")
    return o


@pytest.fixture
def ws(tmp_path: Path, outside: Path) -> Path:
    w = tmp_path / "ws"
    (w / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=w, check=True)
    (w / "ok.txt").write_text("harmless\n")
    (w / "link_file").symlink_to(outside / "secret.txt")
    (w / "link_dir").symlink_to(outside)
    (w / "sub" / "nested").symlink_to("../link_dir")
    (w / "rel_up").symlink_to("../outside")
    (w / "dangling").symlink_to(outside / "created-through-link.txt")
    (w / "loop_a").symlink_to("loop_b")
    (w / "loop_b").symlink_to("loop_a")
    return w


@pytest.fixture
def guard(outside: Path, ws: Path) -> Iterator[Any]:
    """Yields a checker; also re-checks at teardown."""
    before = snapshot(outside)

    def check(result: Any = None) -> None:
        assert snapshot(outside) == before, "something outside the workspace changed"
        if result is not None:
            assert SECRET not in result.content, f"sentinel leaked: {result.content[:300]}"

    yield check
    check()


ESCAPES = [
    "../outside/secret.txt",
    "{outside}/secret.txt",
    "{outside}/../outside/secret.txt",
    "/proc/self/root{outside}/secret.txt",
    "sub/../../outside/secret.txt",
    "link_file",
    "link_dir/secret.txt",
    "link_dir/dir/inner.txt",
    "sub/nested/secret.txt",
    "rel_up/secret.txt",
    "./link_dir/../link_dir/secret.txt",
]


def paths(outside: Path) -> list[str]:
    return [p.format(outside=outside) for p in ESCAPES]


async def run(ctx: ToolContext, name: str, **args: Any) -> Any:
    return await execute(TOOLS, name, args, ctx)


async def test_read_refuses_every_escape(ws: Path, outside: Path, guard: Any) -> None:
    ctx = ToolContext(workspace=ws)
    for p in paths(outside):
        r = await run(ctx, "read", file_path=p)
        assert r.is_error and "outside the workspace" in r.content, (p, r.content)
        guard(r)
    r = await run(ctx, "read", file_path="loop_a")
    assert r.is_error
    guard(r)


async def test_write_refuses_every_escape(ws: Path, outside: Path, guard: Any) -> None:
    ctx = ToolContext(workspace=ws)
    targets = [*paths(outside), "dangling", "link_dir/new.txt", "sub/nested/dir/new.txt"]
    for p in targets:
        r = await run(ctx, "write", file_path=p, content="PWNED")
        assert r.is_error and "outside the workspace" in r.content, (p, r.content)
        guard(r)
    assert not (outside / "created-through-link.txt").exists()


async def test_edit_refuses_every_escape(ws: Path, outside: Path, guard: Any) -> None:
    ctx = ToolContext(workspace=ws)
    for p in [*paths(outside), "dangling"]:
        r = await run(ctx, "edit", file_path=p, old_string=SECRET, new_string="PWNED")
        assert r.is_error and "outside the workspace" in r.content, (p, r.content)
        guard(r)
        r = await run(ctx, "edit", file_path=p, old_string="", new_string="PWNED")
        assert r.is_error
        guard(r)


async def test_apply_patch_refuses_escapes_and_stays_atomic(
    ws: Path, outside: Path, guard: Any
) -> None:
    ctx = ToolContext(workspace=ws)
    good = "*** Add File: fine.txt\n+fine\n"
    bad_ops = [
        "*** Add File: ../outside/new.txt\n+PWNED\n",
        f"*** Add File: {outside}/new.txt\n+PWNED\n",
        "*** Add File: dangling\n+PWNED\n",
        "*** Add File: link_dir/new.txt\n+PWNED\n",
        f"*** Update File: link_file\n@@\n-{SECRET}\n+PWNED\n",
        "*** Update File: sub/nested/secret.txt\n@@\n-x\n+y\n",
        "*** Delete File: link_file\n",
        "*** Delete File: ../outside/secret.txt\n",
        "*** Update File: ok.txt\n*** Move to: ../outside/moved.txt\n@@\n-harmless\n+moved\n",
        "*** Update File: ok.txt\n*** Move to: link_dir/moved.txt\n@@\n-harmless\n+moved\n",
        "*** Update File: ok.txt\n*** Move to: rel_up/dir/moved.txt\n@@\n-harmless\n+m\n",
    ]
    for op in bad_ops:
        # A valid change first: atomicity means it must not happen either.
        r = await run(ctx, "apply_patch", patch=f"*** Begin Patch\n{good}{op}*** End Patch")
        assert r.is_error and "outside the workspace" in r.content, (op, r.content)
        assert not (ws / "fine.txt").exists()
        assert (ws / "ok.txt").read_text() == "harmless\n"
        assert (ws / "link_file").is_symlink()
        guard(r)


async def test_ls_glob_grep_git_stay_inside(
    ws: Path, outside: Path, guard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = ToolContext(workspace=ws)
    for p in ["..", str(outside), "link_dir", "sub/nested", "rel_up/dir"]:
        for name, args in (("ls", {"path": p}), ("glob", {"pattern": "*", "path": p})):
            r = await run(ctx, name, **args)
            assert r.is_error and "outside the workspace" in r.content, (name, p, r.content)
            guard(r)
    # Listing the workspace shows the links as links; globbing never descends into them.
    r = await run(ctx, "ls")
    assert f"link_dir -> {outside}" in r.content
    for pattern in ("**/secret.txt", "**/*.txt", "../outside/*", "link_dir/*"):
        r = await run(ctx, "glob", pattern=pattern)
        found = [] if r.content.startswith("No files match") else r.content.splitlines()
        assert found in ([], ["ok.txt"]), (pattern, r.content)
        guard(r)
    for use_rg in (True, False):
        monkeypatch.setattr(search, "USE_RIPGREP", use_rg)
        for p in ["..", str(outside), "link_file", "link_dir", "sub/nested/secret.txt"]:
            r = await run(ctx, "grep", pattern="SECRET", path=p, output_mode="content")
            assert r.is_error and "outside the workspace" in r.content, (p, r.content)
            guard(r)
        r = await run(ctx, "grep", pattern="SECRET", output_mode="content")
        assert r.content == "No matches found", r.content
        guard(r)
    for p in ["../outside/secret.txt", "link_file", "link_dir/secret.txt"]:
        r = await run(ctx, "git", action="add", paths=[p])
        assert r.is_error and "outside the workspace" in r.content
        guard(r)


async def test_hardlink_write_does_not_reach_the_shared_inode(
    ws: Path, outside: Path, guard: Any
) -> None:
    """A hard link cannot be told apart from a file, but writes replace the name atomically,
    so the other name (outside) keeps its bytes."""
    os.link(outside / "secret.txt", ws / "hard.txt")
    before = (outside / "secret.txt").read_bytes()
    ctx = ToolContext(workspace=ws)
    r = await run(ctx, "write", file_path="hard.txt", content="overwritten\n")
    assert not r.is_error
    r = await run(ctx, "edit", file_path="hard.txt", old_string="overwritten", new_string="e")
    assert not r.is_error
    assert (outside / "secret.txt").read_bytes() == before
    os.unlink(ws / "hard.txt")
    # The guard compares mtimes too; a new link bumps the source's ctime only.
    guard()


# ---- the race: checked, then swapped for a symlink before the open --------------------------


def test_swapped_file_is_not_read_or_written(ws: Path, outside: Path, guard: Any) -> None:
    ctx = ToolContext(workspace=ws)
    (ws / "victim.txt").write_text("inside\n")
    checked = resolve_path(ctx, "victim.txt")
    os.unlink(ws / "victim.txt")
    (ws / "victim.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(WorkspaceError):
        safe_read_bytes(ctx, checked)
    with pytest.raises(WorkspaceError):
        safe_write_bytes(ctx, checked, b"PWNED")
    guard()


def test_swapped_directory_is_not_entered(ws: Path, outside: Path, guard: Any) -> None:
    ctx = ToolContext(workspace=ws)
    (ws / "d" / "dir").mkdir(parents=True)
    (ws / "d" / "secret.txt").write_text("inside\n")
    checked_file = resolve_path(ctx, "d/secret.txt")
    checked_new = resolve_path(ctx, "d/new.txt")
    checked_dir = resolve_path(ctx, "d")
    checked_sub = resolve_path(ctx, "d/dir")
    os.rename(ws / "d", ws / "d-moved")
    (ws / "d").symlink_to(outside)
    with pytest.raises(WorkspaceError):
        safe_read_bytes(ctx, checked_file)
    with pytest.raises(WorkspaceError):
        safe_write_bytes(ctx, checked_new, b"PWNED")
    with pytest.raises(WorkspaceError):
        safe_write_bytes(ctx, checked_file, b"PWNED")
    with pytest.raises(WorkspaceError):
        safe_unlink(ctx, checked_file)
    with pytest.raises(WorkspaceError):
        safe_listdir(ctx, checked_dir)
    with pytest.raises(WorkspaceError):
        safe_rmdir(ctx, checked_sub)
    guard()


def test_swapped_intermediate_directory_deep_in_the_chain(
    ws: Path, outside: Path, guard: Any
) -> None:
    ctx = ToolContext(workspace=ws)
    (ws / "a" / "b" / "dir").mkdir(parents=True)
    checked = resolve_path(ctx, "a/b/dir/inner.txt")
    os.rename(ws / "a" / "b", ws / "a" / "b-moved")
    (ws / "a" / "b").symlink_to(outside)
    with pytest.raises(WorkspaceError):
        safe_read_bytes(ctx, checked)
    with pytest.raises(WorkspaceError):
        safe_write_bytes(ctx, checked, b"PWNED")
    guard()


def test_apply_patch_race_between_verify_and_write(ws: Path, outside: Path, guard: Any) -> None:
    """Verification passes on a real directory; before the writes, it becomes a link out."""
    ctx = ToolContext(workspace=ws)
    (ws / "pkg").mkdir()
    (ws / "pkg" / "secret.txt").write_text("inside\n")
    patch = (
        "*** Begin Patch\n*** Update File: ok.txt\n@@\n-harmless\n+changed\n"
        "*** Update File: pkg/secret.txt\n@@\n-inside\n+PWNED\n"
        "*** Add File: pkg/dir/new.txt\n+PWNED\n*** End Patch"
    )

    def swap() -> None:
        os.rename(ws / "pkg", ws / "pkg-moved")
        (ws / "pkg").symlink_to(outside)

    r = apply_patch_sync(ctx, patch, after_verify=swap)
    assert r.is_error and "rolled back" in r.content and "symbolic link" in r.content
    assert (ws / "ok.txt").read_text() == "harmless\n"
    assert (ws / "pkg-moved" / "secret.txt").read_text() == "inside\n"
    guard(r)
