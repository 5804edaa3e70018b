"""git tool: real repositories, protected branches, no push, plan mode."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from stagecrew.tools.base import ToolContext, ToolResult, execute
from stagecrew.tools.registry import default_tools

TOOLS = default_tools()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    git(r, "config", "user.name", "Test")
    git(r, "config", "user.email", "test@example.invalid")
    git(r, "config", "commit.gpgsign", "false")
    (r / "README.md").write_text("# hi\n")
    git(r, "add", "README.md")
    git(r, "commit", "-q", "-m", "initial")
    return r


@pytest.fixture
def ctx(repo: Path) -> ToolContext:
    return ToolContext(workspace=repo)


async def g(ctx: ToolContext, **args: Any) -> ToolResult:
    return await execute(TOOLS, "git", args, ctx)


async def test_status_diff_add_commit_on_branch(ctx: ToolContext, repo: Path) -> None:
    r = await g(ctx, action="status")
    assert r.content.startswith("## main") and "Working tree clean" in r.content
    (repo / "README.md").write_text("# hi\nmore\n")
    (repo / "new.py").write_text("x = 1\n")
    r = await g(ctx, action="status")
    assert " M README.md" in r.content and "?? new.py" in r.content
    r = await g(ctx, action="diff")
    assert "+more" in r.content and "new.py" not in r.content
    r = await g(ctx, action="diff", staged=True)
    assert r.content.startswith("No staged changes")
    r = await g(ctx, action="add", paths=["new.py", str(repo / "README.md")])
    assert "A\tnew.py" in r.content and "M\tREADME.md" in r.content
    r = await g(ctx, action="diff", staged=True, paths=["new.py"])
    assert "+x = 1" in r.content and "README" not in r.content
    r = await g(ctx, action="diff")
    assert "use staged=true" in r.content
    r = await g(ctx, action="commit", message="add new")
    assert r.is_error and "protected branch 'main'" in r.content and "switch" in r.content
    r = await g(ctx, action="switch", branch="feature/x", create=True)
    assert not r.is_error and "feature/x" in r.content
    r = await g(ctx, action="commit", message="add new\n\nbody")
    assert not r.is_error, r.content
    assert "on feature/x: add new (2 files changed, +2 -0)" in r.content
    assert git(repo, "log", "-1", "--format=%s") == "add new"
    r = await g(ctx, action="log", max_count=5)
    lines = r.content.splitlines()
    assert len(lines) == 2 and lines[0].endswith("Test: add new") and "initial" in lines[1]
    r = await g(ctx, action="commit", message="again")
    assert r.is_error and "nothing is staged" in r.content


async def test_protected_branch_configuration(ctx: ToolContext, repo: Path) -> None:
    (repo / "a").write_text("a")
    await g(ctx, action="add", paths=["a"])
    ctx.services.allow_protected_commit = True
    r = await g(ctx, action="commit", message="allowed")
    assert not r.is_error, r.content
    ctx.services.allow_protected_commit = False
    ctx.services.protected_branches = ["release"]
    (repo / "b").write_text("b")
    await g(ctx, action="add", paths=["b"])
    assert not (await g(ctx, action="commit", message="main is fine now")).is_error
    await g(ctx, action="switch", branch="release", create=True)
    (repo / "c").write_text("c")
    await g(ctx, action="add", paths=["c"])
    r = await g(ctx, action="commit", message="nope")
    assert r.is_error and "protected branch 'release'" in r.content


async def test_branch_list_create_switch(ctx: ToolContext, repo: Path) -> None:
    r = await g(ctx, action="branch", name="topic")
    assert "Created branch 'topic'" in r.content and "still on main" in r.content
    r = await g(ctx, action="branch")
    assert r.content.splitlines() == ["* main", "  topic"]
    r = await g(ctx, action="branch", name="topic")
    assert r.is_error and "already exists" in r.content
    for bad in ("-D", "has space", "a..b"):
        r = await g(ctx, action="branch", name=bad)
        assert r.is_error and "invalid branch name" in r.content, bad
    r = await g(ctx, action="switch", branch="topic")
    assert r.content == "Switched to branch 'topic'." and git(repo, "branch", "--show-current") == (
        "topic"
    )
    r = await g(ctx, action="switch", branch="nope")
    assert r.is_error and "git switch failed" in r.content
    r = await g(ctx, action="switch")
    assert r.is_error and "needs branch" in r.content


async def test_push_refused_in_every_form(ctx: ToolContext) -> None:
    for action in ("push", "PUSH", "push origin main", "fetch", "pull", "remote"):
        r = await g(ctx, action=action)
        assert r.is_error and "never pushes" in r.content, action
    assert (
        "push"
        not in TOOLS["git"].schema()["function"]["parameters"]["properties"]["action"]["enum"]
    )


async def test_paths_must_stay_inside(ctx: ToolContext, repo: Path) -> None:
    r = await g(ctx, action="add", paths=["../outside"])
    assert r.is_error and "outside the workspace" in r.content
    r = await g(ctx, action="add", paths=["--all"])
    assert r.is_error and "looks like an option" in r.content
    r = await g(ctx, action="add")
    assert r.is_error and "needs paths" in r.content
    r = await g(ctx, action="add", paths=["missing.txt"])
    assert r.is_error and "did not match" in r.content


async def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    r = await g(ToolContext(workspace=plain), action="status")
    assert r.is_error and "Not a git repository" in r.content and "git init" in r.content


async def test_fresh_repository_without_commits(tmp_path: Path) -> None:
    r0 = tmp_path / "fresh"
    r0.mkdir()
    git(r0, "init", "-q", "-b", "main")
    git(r0, "config", "user.name", "T")
    git(r0, "config", "user.email", "t@example.invalid")
    ctx = ToolContext(workspace=r0)
    assert (await g(ctx, action="log")).content == "No commits yet on main."
    r = await g(ctx, action="branch", name="x")
    assert r.is_error and "before the first commit" in r.content
    assert not (await g(ctx, action="switch", branch="work", create=True)).is_error
    (r0 / "f").write_text("f\n")
    await g(ctx, action="add", paths=["."])
    r = await g(ctx, action="commit", message="first")
    assert not r.is_error and "on work: first" in r.content


async def test_plan_mode_allows_only_reading(ctx: ToolContext, repo: Path) -> None:
    ctx.read_only = True
    (repo / "README.md").write_text("changed\n")
    index_before = (repo / ".git" / "index").read_bytes()
    assert not (await g(ctx, action="status")).is_error
    assert not (await g(ctx, action="diff")).is_error
    assert not (await g(ctx, action="log")).is_error
    assert not (await g(ctx, action="branch")).is_error
    for args in (
        {"action": "add", "paths": ["README.md"]},
        {"action": "commit", "message": "x"},
        {"action": "branch", "name": "new"},
        {"action": "switch", "branch": "new", "create": True},
    ):
        r = await g(ctx, **args)
        assert r.is_error and "read-only (plan) mode" in r.content, args
    assert (repo / ".git" / "index").read_bytes() == index_before
    assert git(repo, "branch", "--list") == "* main"
