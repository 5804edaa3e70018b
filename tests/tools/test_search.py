"""grep: ripgrep and the pure-Python fallback, on one real tree, must give the same answers."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stagecrew.tools import search
from stagecrew.tools.base import ToolContext, ToolResult, execute
from stagecrew.tools.registry import default_tools

TOOLS = default_tools()
HAVE_RG = shutil.which("rg") is not None


def sh(cwd: Path, *args: str) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, stdin=subprocess.DEVNULL)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    sh(ws, "git", "init", "-q", "-b", "main")
    files: dict[str, bytes] = {
        ".gitignore": b"ignored.py\nbuild/\n*.log\n",
        "a.py": b"foo\nbar foo\nbaz\n",
        ".hidden.py": b"x\nfoo\nbar\n",
        "sub/b.txt": b"nothing\nfoo\n\nfoo\n",
        "sub/deep/c.txt": b"Foo upper\nfoo bar\n",
        "ignored.py": b"foo ignored\n",
        "build/x.py": b"foo in build\n",
        "bin.dat": b"foo\x00binary",
        "m.txt": b"aa\nbb\naa\nbb\ncc\n",
        "newdir/y.log": b"foo log\n",
        "-dash.txt": b"-e foo\n",
    }
    for i, (name, data) in enumerate(sorted(files.items())):
        p = ws / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (2_000_000 + i, 2_000_000 + i))
    (ws / "link.txt").symlink_to("a.py")
    sh(ws, "git", "add", "a.py", "sub/b.txt")
    return ws


async def grep(ctx: ToolContext, **args: Any) -> ToolResult:
    return await execute(TOOLS, "grep", args, ctx)


async def both(ctx: ToolContext, monkeypatch: pytest.MonkeyPatch, **args: Any) -> ToolResult:
    """Run with rg and with the fallback; they must agree exactly."""
    monkeypatch.setattr(search, "USE_RIPGREP", True)
    fast = await grep(ctx, **args)
    monkeypatch.setattr(search, "USE_RIPGREP", False)
    slow = await grep(ctx, **args)
    monkeypatch.setattr(search, "USE_RIPGREP", True)
    if not fast.is_error:
        assert (fast.metadata["backend"], slow.metadata["backend"]) == ("rg", "python")
    assert (fast.content, fast.is_error) == (slow.content, slow.is_error), args
    return fast


CASES: list[dict[str, Any]] = [
    {"pattern": "foo"},
    {"pattern": "foo", "output_mode": "content"},
    {"pattern": "foo", "output_mode": "content", "-n": False},
    {"pattern": "foo", "output_mode": "content", "-C": 1},
    {"pattern": "foo", "output_mode": "content", "-A": 1},
    {"pattern": "foo", "output_mode": "content", "-B": 2, "path": "sub"},
    {"pattern": "foo", "output_mode": "count"},
    {"pattern": "FOO", "-i": True, "output_mode": "content"},
    {"pattern": "foo", "glob": "*.txt"},
    {"pattern": "foo", "glob": "sub/*.txt"},
    {"pattern": "foo", "glob": "!*.txt"},
    {"pattern": "foo", "glob": "*.py"},
    {"pattern": "foo", "glob": "*.log"},
    {"pattern": "foo", "glob": "**/*.{py,txt}", "output_mode": "count"},
    {"pattern": "foo", "type": "py"},
    {"pattern": "foo", "path": "sub/b.txt", "output_mode": "content"},
    {"pattern": "foo", "path": "build"},
    {"pattern": "aa\\nbb", "multiline": True, "output_mode": "content"},
    {"pattern": "aa\\nbb", "multiline": True, "output_mode": "count"},
    {"pattern": "a.\\nb", "multiline": True},
    {"pattern": "foo", "output_mode": "content", "head_limit": 2},
    {"pattern": "foo", "head_limit": 1},
    {"pattern": "foo(?= )", "output_mode": "content"},
    {"pattern": "-e foo", "output_mode": "content"},
    {"pattern": "no such text anywhere"},
]


@pytest.mark.skipif(not HAVE_RG, reason="ripgrep not installed")
@pytest.mark.parametrize("args", CASES, ids=[str(i) for i in range(len(CASES))])
async def test_backends_agree(tree: Path, monkeypatch: pytest.MonkeyPatch, args: dict) -> None:
    await both(ToolContext(workspace=tree), monkeypatch, **args)


async def test_files_mode_semantics(tree: Path) -> None:
    r = await grep(ToolContext(workspace=tree), pattern="foo")
    listed = r.content.splitlines()
    assert listed[0] == f"Found {len(listed) - 1} files"
    # hidden files are searched; ignored, binary, .git, symlinked files are not
    assert set(listed[1:]) == {".hidden.py", "a.py", "sub/b.txt", "sub/deep/c.txt", "-dash.txt"}
    # newest first (mtimes were set in name order)
    assert listed[1:3] == ["sub/deep/c.txt", "sub/b.txt"]


async def test_content_mode_format(tree: Path) -> None:
    ctx = ToolContext(workspace=tree)
    r = await grep(ctx, pattern="foo", path="sub", output_mode="content", **{"-C": 1})
    assert r.content.splitlines() == [
        "sub/b.txt-1-nothing",
        "sub/b.txt:2:foo",
        "sub/b.txt-3-",
        "sub/b.txt:4:foo",
        "--",
        "sub/deep/c.txt-1-Foo upper",
        "sub/deep/c.txt:2:foo bar",
    ]
    r = await grep(ctx, pattern="foo", output_mode="count", path="sub")
    assert r.content.splitlines()[:2] == ["sub/b.txt:2", "sub/deep/c.txt:1"]
    assert "Found 3 matching lines in 2 files" in r.content


async def test_explicit_glob_finds_ignored_file_like_rg(tree: Path) -> None:
    r = await grep(ToolContext(workspace=tree), pattern="foo", glob="*.py")
    assert "ignored.py" in r.content.splitlines()
    assert "build/x.py" not in r.content  # its directory is ignored


async def test_fallback_without_rg_on_path(tree: Path) -> None:
    """The natural way rg goes missing: not on the PATH the tools see."""
    ctx = ToolContext(workspace=tree, env={"PATH": "/nonexistent", "HOME": str(tree)})
    r = await grep(ctx, pattern="ba[rz]", output_mode="content")
    assert r.metadata["backend"] == "python"
    assert "a.py:2:bar foo" in r.content and "a.py:3:baz" in r.content


@pytest.mark.parametrize("use_rg", [True, False])
async def test_invalid_regex_is_precise(
    tree: Path, monkeypatch: pytest.MonkeyPatch, use_rg: bool
) -> None:
    monkeypatch.setattr(search, "USE_RIPGREP", use_rg and HAVE_RG)
    r = await grep(ToolContext(workspace=tree), pattern="foo(bar")
    assert r.is_error
    assert r.content.startswith("Invalid regular expression 'foo(bar'")
    assert ("unclosed group" in r.content) if use_rg and HAVE_RG else ("position 3" in r.content)


@pytest.mark.parametrize("use_rg", [True, False])
async def test_unknown_type(tree: Path, monkeypatch: pytest.MonkeyPatch, use_rg: bool) -> None:
    monkeypatch.setattr(search, "USE_RIPGREP", use_rg and HAVE_RG)
    r = await grep(ToolContext(workspace=tree), pattern="foo", type="klingon")
    assert r.is_error and "Unknown file type 'klingon'" in r.content and "py" in r.content


async def test_path_errors(tree: Path, tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tree)
    r = await grep(ctx, pattern="foo", path="missing")
    assert r.is_error and "does not exist" in r.content
    r = await grep(ctx, pattern="foo", path="..")
    assert r.is_error and "outside the workspace" in r.content


async def test_schema_uses_claude_code_names() -> None:
    props = TOOLS["grep"].schema()["function"]["parameters"]["properties"]
    assert {"-i", "-n", "-A", "-B", "-C", "head_limit", "multiline", "type", "glob"} <= set(props)


async def test_output_is_capped(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / "long.txt").write_text("match me\n" * 6000)
    for use_rg in (True, False):
        monkeypatch.setattr(search, "USE_RIPGREP", use_rg and HAVE_RG)
        r = await grep(ToolContext(workspace=tree), pattern="match", output_mode="content")
        assert len(r.content) < search.OUTPUT_LIMIT + 500
        assert "output cut at" in r.content
    assert not ToolContext(workspace=tree).processes.pgids
