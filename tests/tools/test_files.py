"""read / write / edit / apply_patch / ls / glob on real files in real git repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stagecrew.tools.base import ToolContext, ToolResult, execute
from stagecrew.tools.files import (
    GLOB_LIMIT,
    LS_LIMIT,
    READ_MAX_FILE,
    apply_patch_sync,
    compile_glob,
    parse_patch,
)
from stagecrew.tools.registry import default_tools

TOOLS = default_tools()


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(
        args, cwd=cwd, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    sh(w, "git", "init", "-q", "-b", "main")
    return w


@pytest.fixture
def ctx(ws: Path) -> ToolContext:
    return ToolContext(workspace=ws)


async def call(ctx: ToolContext, name: str, **args: Any) -> ToolResult:
    return await execute(TOOLS, name, args, ctx)


# ---- read ----------------------------------------------------------------------------------


async def test_read_numbers_lines_like_cat_n(ctx: ToolContext, ws: Path) -> None:
    (ws / "f.py").write_text("one\ntwo\n\tthree\n")
    r = await call(ctx, "read", file_path="f.py")
    assert not r.is_error
    assert r.content == "     1\tone\n     2\ttwo\n     3\t\tthree"
    assert r.metadata["total_lines"] == 3


async def test_read_offset_limit_says_partial(ctx: ToolContext, ws: Path) -> None:
    (ws / "f.txt").write_text("".join(f"line {i}\n" for i in range(1, 101)))
    r = await call(ctx, "read", file_path=str(ws / "f.txt"), offset=10, limit=5)
    lines = r.content.splitlines()
    assert lines[0] == "    10\tline 10"
    assert lines[4] == "    14\tline 14"
    assert "(showing lines 10-14 of 100" in r.content
    past = await call(ctx, "read", file_path="f.txt", offset=500)
    assert past.is_error and "past the end" in past.content and "100 lines" in past.content


async def test_read_default_limit_2000(ctx: ToolContext, ws: Path) -> None:
    (ws / "big.txt").write_text("x\n" * 2500)
    r = await call(ctx, "read", file_path="big.txt")
    assert "  2000\tx" in r.content and "  2001\t" not in r.content
    assert "(showing lines 1-2000 of 2500" in r.content


async def test_read_cuts_long_lines(ctx: ToolContext, ws: Path) -> None:
    (ws / "min.js").write_text("a" * 5000 + "\nshort\n")
    r = await call(ctx, "read", file_path="min.js")
    first = r.content.splitlines()[0]
    assert first.startswith("     1\t" + "a" * 2000 + "... [line cut: 5000 characters")
    assert "1 line was longer than 2000 characters" in r.content
    assert "     2\tshort" in r.content


async def test_read_refuses_binary_with_size(ctx: ToolContext, ws: Path) -> None:
    (ws / "img.bin").write_bytes(b"\x89PNG\x00\x01" + b"\x00" * 3000)
    r = await call(ctx, "read", file_path="img.bin")
    assert r.is_error and "binary" in r.content and "2.9 KB" in r.content


async def test_read_size_guard(ctx: ToolContext, ws: Path) -> None:
    line = b"y" * 99 + b"\n"
    (ws / "huge.log").write_bytes(line * (READ_MAX_FILE // 100 + 10))
    r = await call(ctx, "read", file_path="huge.log")
    assert r.is_error and "offset and limit" in r.content and "5.0 MB" in r.content
    ok = await call(ctx, "read", file_path="huge.log", offset=3, limit=2)
    assert not ok.is_error
    assert ok.content.startswith("     3\t" + "y" * 99)
    assert f"(showing lines 3-4 of {READ_MAX_FILE // 100 + 10};" in ok.content


async def test_read_empty_missing_and_directory(ctx: ToolContext, ws: Path) -> None:
    (ws / "empty").write_text("")
    (ws / "config.yaml").write_text("a: 1\n")
    r = await call(ctx, "read", file_path="empty")
    assert not r.is_error and "empty" in r.content
    r = await call(ctx, "read", file_path="config.yml")
    assert r.is_error and "does not exist" in r.content and "config.yaml" in r.content
    (ws / "d").mkdir()
    r = await call(ctx, "read", file_path="d")
    assert r.is_error and "directory" in r.content


async def test_read_invalid_args_are_precise(ctx: ToolContext) -> None:
    r = await call(ctx, "read", file_path="x", limit=0)
    assert r.is_error and "field 'limit'" in r.content


async def test_read_crlf_shown_without_cr(ctx: ToolContext, ws: Path) -> None:
    (ws / "w.txt").write_bytes(b"a\r\nb\r\n")
    r = await call(ctx, "read", file_path="w.txt")
    assert r.content == "     1\ta\n     2\tb"


# ---- write ---------------------------------------------------------------------------------


async def test_write_creates_parents_and_reports_bytes(ctx: ToolContext, ws: Path) -> None:
    r = await call(ctx, "write", file_path="a/b/c.txt", content="héllo\n")
    assert not r.is_error
    assert r.metadata["bytes"] == 7 and "Created a/b/c.txt (7 bytes" in r.content
    assert (ws / "a/b/c.txt").read_text() == "héllo\n"
    r = await call(ctx, "write", file_path="a/b/c.txt", content="x")
    assert r.content.startswith("Overwrote") and (ws / "a/b/c.txt").read_text() == "x"


async def test_write_onto_directory_fails(ctx: ToolContext, ws: Path) -> None:
    (ws / "d").mkdir()
    r = await call(ctx, "write", file_path="d", content="x")
    assert r.is_error and "directory" in r.content


# ---- edit ----------------------------------------------------------------------------------


async def test_edit_unique_replacement_shows_snippet(ctx: ToolContext, ws: Path) -> None:
    (ws / "m.py").write_text("def f():\n    return 1\n\ndef g():\n    return 2\n")
    r = await call(ctx, "edit", file_path="m.py", old_string="return 2", new_string="return 3")
    assert not r.is_error, r.content
    assert (ws / "m.py").read_text().endswith("return 3\n")
    assert "     5\t    return 3" in r.content


async def test_edit_non_unique_says_how_many(ctx: ToolContext, ws: Path) -> None:
    (ws / "m.py").write_text("x = 1\nx = 1\ny = 2\nx = 1\n")
    r = await call(ctx, "edit", file_path="m.py", old_string="x = 1", new_string="x = 9")
    assert r.is_error and "matches 3 times" in r.content and "lines 1, 2, 4" in r.content
    assert (ws / "m.py").read_text() == "x = 1\nx = 1\ny = 2\nx = 1\n"
    r = await call(
        ctx, "edit", file_path="m.py", old_string="x = 1", new_string="x = 9", replace_all=True
    )
    assert not r.is_error and "3 occurrences" in r.content
    assert (ws / "m.py").read_text() == "x = 9\nx = 9\ny = 2\nx = 9\n"


async def test_edit_not_found_with_whitespace_hint(ctx: ToolContext, ws: Path) -> None:
    (ws / "m.py").write_text("def f():\n\treturn 1\n")
    r = await call(
        ctx, "edit", file_path="m.py", old_string="def f():\n    return 1", new_string="pass"
    )
    assert r.is_error and "not found" in r.content
    assert "differs only in whitespace" in r.content and "line 1" in r.content
    r = await call(ctx, "edit", file_path="m.py", old_string="nothing like it", new_string="x")
    assert r.is_error and "not found" in r.content and "whitespace" not in r.content


async def test_edit_detects_line_number_prefixes(ctx: ToolContext, ws: Path) -> None:
    (ws / "m.py").write_text("a = 1\nb = 2\n")
    r = await call(
        ctx, "edit", file_path="m.py", old_string="     1\ta = 1\n     2\tb = 2", new_string="c"
    )
    assert r.is_error and "line-number prefixes" in r.content


async def test_edit_identical_and_missing_file(ctx: ToolContext, ws: Path) -> None:
    (ws / "m.py").write_text("a\n")
    r = await call(ctx, "edit", file_path="m.py", old_string="a", new_string="a")
    assert r.is_error and "identical" in r.content
    r = await call(ctx, "edit", file_path="nope.py", old_string="a", new_string="b")
    assert r.is_error and "does not exist" in r.content
    r = await call(ctx, "edit", file_path="new.py", old_string="", new_string="print(1)\n")
    assert not r.is_error and (ws / "new.py").read_text() == "print(1)\n"
    r = await call(ctx, "edit", file_path="m.py", old_string="", new_string="x")
    assert r.is_error and "not empty" in r.content


async def test_edit_crlf_file_and_foreign_bytes_survive(ctx: ToolContext, ws: Path) -> None:
    (ws / "w.txt").write_bytes(b"caf\xe9\r\nline two\r\nline three\r\n")
    r = await call(
        ctx, "edit", file_path="w.txt", old_string="line two\nline three", new_string="2\n3"
    )
    assert not r.is_error, r.content
    assert (ws / "w.txt").read_bytes() == b"caf\xe9\r\n2\r\n3\r\n"


async def test_edit_refuses_binary(ctx: ToolContext, ws: Path) -> None:
    (ws / "b.bin").write_bytes(b"ab\x00cd")
    r = await call(ctx, "edit", file_path="b.bin", old_string="ab", new_string="xy")
    assert r.is_error and "binary" in r.content


# ---- apply_patch ---------------------------------------------------------------------------

PATCH = """*** Begin Patch
*** Add File: pkg/new.py
+def new():
+
+    return 42
*** Update File: pkg/old.py
@@ def second():
     a = 1
-    return a
+    return a + 1
*** Update File: pkg/rename_me.py
*** Move to: pkg/renamed.py
@@
-old line
+new line
*** Delete File: pkg/gone.py
*** End Patch
"""


def _tree(ws: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(ws)): p.read_bytes()
        for p in sorted(ws.rglob("*"))
        if p.is_file() and ".git" not in p.parts
    }


@pytest.fixture
def pkg(ws: Path) -> Path:
    (ws / "pkg").mkdir()
    (ws / "pkg" / "old.py").write_text(
        "def first():\n    a = 1\n    return a\n\ndef second():\n    a = 1\n    return a\n"
    )
    (ws / "pkg" / "rename_me.py").write_text("keep\nold line\nkeep too\n")
    (ws / "pkg" / "gone.py").write_text("bye\n")
    return ws / "pkg"


async def test_apply_patch_multi_file(ctx: ToolContext, ws: Path, pkg: Path) -> None:
    r = await call(ctx, "apply_patch", patch=PATCH)
    assert not r.is_error, r.content
    assert (pkg / "new.py").read_text() == "def new():\n\n    return 42\n"
    # The @@ context picked the second function, not the identical lines in the first.
    assert (pkg / "old.py").read_text() == (
        "def first():\n    a = 1\n    return a\n\ndef second():\n    a = 1\n    return a + 1\n"
    )
    assert not (pkg / "rename_me.py").exists()
    assert (pkg / "renamed.py").read_text() == "keep\nnew line\nkeep too\n"
    assert not (pkg / "gone.py").exists()
    assert r.content.splitlines() == [
        "Applied patch:",
        "A pkg/new.py",
        "M pkg/old.py",
        "R pkg/rename_me.py -> pkg/renamed.py",
        "D pkg/gone.py",
    ]


async def test_apply_patch_is_atomic_on_bad_hunk(ctx: ToolContext, ws: Path, pkg: Path) -> None:
    before = _tree(ws)
    bad = PATCH.replace("-    return a\n", "-    return b\n")
    r = await call(ctx, "apply_patch", patch=bad)
    assert r.is_error and "nothing was changed" in r.content
    assert "hunk 1 does not match" in r.content and "pkg/old.py" in r.content
    assert _tree(ws) == before


async def test_apply_patch_refusals(ctx: ToolContext, ws: Path, pkg: Path) -> None:
    before = _tree(ws)
    cases = {
        "*** Begin Patch\n*** Add File: pkg/old.py\n+x\n*** End Patch": "already exists",
        "*** Begin Patch\n*** Delete File: pkg/nope.py\n*** End Patch": "does not exist",
        "*** Begin Patch\n*** Update File: pkg/nope.py\n@@\n-a\n+b\n*** End Patch": "not exist",
        "*** Begin Patch\n*** Update File: pkg/gone.py\n*** Move to: pkg/old.py\n@@\n-bye\n+hi\n"
        "*** End Patch": "which exists",
        "*** Update File: x\n": "must start with",
        "*** Begin Patch\n*** Add File: x\n+a\n": "must end with",
        "*** Begin Patch\n*** Add File: x\nno plus\n*** End Patch": "must start with '+'",
        "*** Begin Patch\n*** Frobnicate: x\n*** End Patch": "expected '*** Add File",
        "*** Begin Patch\n*** Update File: pkg/old.py\n@@ def third():\n-x\n+y\n*** End Patch": (
            "'@@ def third():' was not found"
        ),
    }
    for patch, expected in cases.items():
        r = await call(ctx, "apply_patch", patch=patch)
        assert r.is_error, patch
        assert expected in r.content, (patch, r.content)
    assert _tree(ws) == before


async def test_apply_patch_rolls_back_when_a_write_fails(
    ctx: ToolContext, ws: Path, pkg: Path
) -> None:
    """Verification passes; then (as a concurrent agent could) a directory appears where the
    second file is to be created. The first file was already written and must be restored."""
    before = _tree(ws)
    patch = (
        "*** Begin Patch\n*** Update File: pkg/gone.py\n@@\n-bye\n+hello\n"
        "*** Add File: pkg/sub/new.txt\n+x\n*** End Patch"
    )

    def sabotage() -> None:
        (pkg / "sub" / "new.txt").mkdir(parents=True)

    r = apply_patch_sync(ctx, patch, after_verify=sabotage)
    assert r.is_error and "rolled back" in r.content and "directory" in r.content
    assert _tree(ws) == before
    assert (pkg / "gone.py").read_text() == "bye\n"


async def test_apply_patch_detects_concurrent_change(ctx: ToolContext, ws: Path, pkg: Path) -> None:
    patch = (
        "*** Begin Patch\n*** Update File: pkg/gone.py\n@@\n-bye\n+hello\n"
        "*** Delete File: pkg/rename_me.py\n*** Add File: pkg/fresh/new.txt\n+n\n*** End Patch"
    )

    def someone_else_edits() -> None:
        (pkg / "rename_me.py").write_text("changed by someone else\n")

    r = apply_patch_sync(ctx, patch, after_verify=someone_else_edits)
    assert r.is_error and "changed on disk" in r.content
    assert (pkg / "gone.py").read_text() == "bye\n"
    assert (pkg / "rename_me.py").read_text() == "changed by someone else\n"
    assert not (pkg / "fresh").exists()


async def test_apply_patch_leniencies(ctx: ToolContext, ws: Path) -> None:
    (ws / "a.txt").write_text("one  \ntwo\nthree\n")
    (ws / "w.txt").write_bytes(b"x\r\ny\r\n")
    # heredoc wrapper, trailing-whitespace-insensitive match, End of File anchor, CRLF file
    patch = (
        "apply_patch <<'EOF'\n*** Begin Patch\n*** Update File: a.txt\n@@\n one\n-two\n+2\n"
        " three\n*** End of File\n*** Update File: w.txt\n@@\n x\n-y\n+z\n*** End Patch\nEOF\n"
    )
    r = await call(ctx, "apply_patch", patch=patch)
    assert not r.is_error, r.content
    assert (ws / "a.txt").read_text() == "one\n2\nthree\n"
    assert (ws / "w.txt").read_bytes() == b"x\r\nz\r\n"


def test_parse_patch_shapes() -> None:
    ops = parse_patch(PATCH)
    assert [(o.kind, o.path, o.move_to) for o in ops] == [
        ("add", "pkg/new.py", None),
        ("update", "pkg/old.py", None),
        ("update", "pkg/rename_me.py", "pkg/renamed.py"),
        ("delete", "pkg/gone.py", None),
    ]
    assert ops[1].hunks[0].contexts == ["def second():"]
    assert ops[1].hunks[0].old == ["    a = 1", "    return a"]


# ---- ls ------------------------------------------------------------------------------------


async def test_ls(ctx: ToolContext, ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "b.txt").write_text("x" * 2048)
    (ws / "a.py").write_text("")
    (ws / "l").symlink_to("a.py")
    (ws / "junk.pyc").write_text("")
    r = await call(ctx, "ls", ignore=["*.pyc"])
    assert r.content.splitlines() == [
        "./ (4 entries)",
        "a.py  (0 B)",
        "b.txt  (2.0 KB)",
        "l -> a.py",
        "src/",
    ]
    assert ".git" not in r.content and "junk.pyc" not in r.content
    r = await call(ctx, "ls", path="src")
    assert "empty directory" in r.content
    r = await call(ctx, "ls", path="b.txt")
    assert r.is_error and "not a directory" in r.content
    r = await call(ctx, "ls", path="nope")
    assert r.is_error and "does not exist" in r.content


async def test_ls_cap(ctx: ToolContext, ws: Path) -> None:
    many = ws / "many"
    many.mkdir()
    for i in range(LS_LIMIT + 5):
        (many / f"f{i:05d}").touch()
    r = await call(ctx, "ls", path="many")
    assert f"({LS_LIMIT + 5} entries)" in r.content
    assert "5 more entries not shown" in r.content
    assert len(r.content.splitlines()) == LS_LIMIT + 2


# ---- glob ----------------------------------------------------------------------------------


def test_compile_glob() -> None:
    assert compile_glob("**/*.py").match("a/b/c.py")
    assert compile_glob("**/*.py").match("c.py")
    assert not compile_glob("*.py").match("a/c.py")
    assert compile_glob("src/**/*.{ts,tsx}").match("src/x/y.tsx")
    assert compile_glob("src/**").match("src/a/b")
    assert compile_glob("[!a]?.txt").match("b1.txt")
    assert not compile_glob("[!a]?.txt").match("a1.txt")
    assert compile_glob("a.{py,{c,h}}").match("a.h")


async def test_glob_sorted_newest_first_and_gitignore(ctx: ToolContext, ws: Path) -> None:
    (ws / ".gitignore").write_text("build/\n*.log\n")
    for i, name in enumerate(["src/old.py", "src/deep/mid.py", "new.py", "build/gen.py"]):
        p = ws / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
        os.utime(p, (1_000_000 + i * 100, 1_000_000 + i * 100))
    (ws / "x.log").write_text("")
    r = await call(ctx, "glob", pattern="**/*.py")
    assert r.content.splitlines() == ["new.py", "src/deep/mid.py", "src/old.py"]
    r = await call(ctx, "glob", pattern="*.py", path="src")
    assert r.content.splitlines() == ["src/old.py"]
    r = await call(ctx, "glob", pattern="**/*.log")
    assert "No files match" in r.content and "gitignore" in r.content
    # Asking inside an ignored directory explicitly still finds its files.
    r = await call(ctx, "glob", pattern="*.py", path="build")
    assert r.content.splitlines() == ["build/gen.py"]


async def test_glob_outside_git_sees_everything(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "build").mkdir(parents=True)
    (plain / ".gitignore").write_text("build/\n")
    (plain / "build" / "gen.py").write_text("")
    ctx = ToolContext(workspace=plain)
    r = await call(ctx, "glob", pattern="**/*.py")
    assert r.content.splitlines() == ["build/gen.py"]


async def test_glob_cap(ctx: ToolContext, ws: Path) -> None:
    for i in range(GLOB_LIMIT + 3):
        (ws / f"f{i}.txt").touch()
    r = await call(ctx, "glob", pattern="*.txt")
    assert len(r.content.splitlines()) == GLOB_LIMIT + 1
    assert f"of {GLOB_LIMIT + 3} matches" in r.content
    assert r.metadata["count"] == GLOB_LIMIT + 3


async def test_glob_errors(ctx: ToolContext, ws: Path) -> None:
    r = await call(ctx, "glob", pattern="/etc/*")
    assert r.is_error and "absolute" in r.content
    r = await call(ctx, "glob", pattern="*", path="missing")
    assert r.is_error and "does not exist" in r.content
    (ws / "a.py").touch()
    r = await call(ctx, "glob", pattern=str(ws / "*.py"))
    assert r.content == "a.py"
