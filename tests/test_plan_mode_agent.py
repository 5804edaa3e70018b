"""Plan mode through the real agent: a model that tries to write in every way, and fails.

The shipped ``plan`` profile is loaded the way the CLI loads it, turned into an ``AgentSpec``
the way ``actors/builder.py`` does (``read_only``, its tool list, its permission rules), and run
in-process against the scripted model server. The model tries the file tools, shell writes of
every flavour, git, and a tool the profile does not offer; every attempt must come back as a
refusal, and the proof that nothing changed is on disk: every file's bytes and mtime (``.git``
included), ``git rev-parse HEAD`` and ``git status --porcelain``, before and after.

Run twice: with bubblewrap (the kernel enforces read-only, so the shell commands do run and
fail with EROFS) and with the allowlist forced (``STAGECREW_NO_BWRAP=1``: the commands are
refused before anything runs). A second tool set offers *every* tool to the read-only agent,
to prove the layers below the profile's tool list hold on their own.

Plans go to ``.stagecrew/plans/`` through ``save_plan`` (outside the tools); the agent itself
cannot write there, which is tested in the same run.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import git

from stagecrew.actors.inprocess import run_agent_inprocess
from stagecrew.actors.plans import PLANS_DIR, plan_title, save_plan
from stagecrew.actors.spec import AgentSpec
from stagecrew.messages import ModelSpecWire, StopReason, ToolFinished
from stagecrew.profiles import discover_profiles
from stagecrew.testing.scripted_llm import ScriptedLLM
from stagecrew.tools import sandbox

pytestmark = pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")

README = "# demo\n\nA tiny project.\n"
APP_COMMITTED = "def greet():\n    return 'hello'\n"
APP_MODIFIED = "def greet():\n    return 'hello, world'\n"
OLD_PLAN = "# Earlier plan\n\n1. Nothing yet.\n"
FINAL_PLAN = (
    "# Plan: greet everyone\n\n"
    "## Goal\nGreet the world.\n\n"
    "## Findings\n- `src/app.py:2` returns 'hello'.\n"
)

Snapshot = dict[str, tuple[str, bytes | None, int]]


# ---------------------------------------------------------------------------------------------
# the repository and what "nothing changed" means


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git repo: two commits, a tracked file modified and not committed, an untracked
    file, and a plan saved by an earlier session (so the agent has one to try to overwrite)."""
    ws = tmp_path / "repo"
    (ws / "src").mkdir(parents=True)
    git(ws, "init", "-q", "-b", "main")
    (ws / "README.md").write_text(README)
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "initial import")
    (ws / "src" / "app.py").write_text(APP_COMMITTED)
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "add greet")
    (ws / "src" / "app.py").write_text(APP_MODIFIED)
    (ws / "scratch.txt").write_text("untracked\n")
    save_plan(ws, "earlier", OLD_PLAN)
    git(ws, "status", "--porcelain")  # refresh the index now, not between the two snapshots
    return ws


def snapshot(root: Path) -> Snapshot:
    """Bytes of every file and the mtime of every entry (directories too: a file created and
    removed again still leaves its directory's mtime changed)."""
    out: Snapshot = {".": ("dir", None, root.stat().st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            is_file = path.is_file() and not path.is_symlink()
            out[str(path.relative_to(root))] = (
                "file" if is_file else "other",
                path.read_bytes() if is_file else None,
                st.st_mtime_ns,
            )
    return out


def git_state(root: Path) -> tuple[str, str]:
    """HEAD and the porcelain status, read without letting git refresh the index."""
    head = git(root, "rev-parse", "HEAD").strip()
    status = git(root, "--no-optional-locks", "status", "--porcelain")
    return head, status


def state(root: Path) -> tuple[Snapshot, tuple[str, str]]:
    return snapshot(root), git_state(root)


def assert_unchanged(root: Path, before: tuple[Snapshot, tuple[str, str]]) -> None:
    files_before, git_before = before
    files_after, git_after = state(root)
    diff = {
        k
        for k in files_before.keys() | files_after.keys()
        if files_before.get(k) != files_after.get(k)
    }
    assert diff == set(), f"plan mode changed: {sorted(diff)}"
    assert git_after == git_before
    assert " M src/app.py" in git_after[1], "the uncommitted change must still be uncommitted"


# ---------------------------------------------------------------------------------------------
# the script: every way to write, then reading


@dataclass(frozen=True)
class Attempt:
    id: str
    tool: str
    arguments: dict[str, Any]
    # Under bwrap the command runs and the kernel refuses the write; most programs then say
    # "Read-only file system". (git stash exits 1 without a word, so only its code is checked.)
    says_erofs: bool = True

    def turn(self) -> dict[str, Any]:
        return {"tool_calls": [{"id": self.id, "name": self.tool, "arguments": self.arguments}]}


def _bash(id: str, command: str, says_erofs: bool = True, **kw: Any) -> Attempt:
    return Attempt(id, "bash", {"command": command, **kw}, says_erofs)


PATCH = "*** Begin Patch\n*** Add File: new.txt\n+x\n*** End Patch\n"

# Ordered so that the attempts the profile answers with "not available" (once a format failure, see
# the report) are never three in a row: bash refusals in between are ordinary tool errors.
WRITES: list[Attempt] = [
    Attempt("write", "write", {"file_path": "README.md", "content": "pwned\n"}),
    _bash("bash-redirect", "echo x > f.txt"),
    Attempt("edit", "edit", {"file_path": "README.md", "old_string": "tiny", "new_string": "big"}),
    _bash("bash-tee", "echo x | tee f.txt"),
    Attempt("apply-patch", "apply_patch", {"patch": PATCH}),
    _bash("bash-sed-i", "sed -i 's/tiny/big/' README.md"),
    _bash("bash-python", "python3 -c \"open('f.txt','w').write('x')\""),
    _bash("bash-git-commit", "git commit -am x"),
    _bash("bash-touch", "touch f.txt"),
    _bash("bash-rm", "rm README.md"),
    Attempt("git-tool-commit", "git", {"action": "commit", "message": "x"}),
    _bash("bash-git-checkout", "git checkout -- src/app.py"),
    _bash("bash-git-stash", "git stash", says_erofs=False),
    Attempt("write-plan", "write", {"file_path": ".stagecrew/plans/mine.md", "content": "# x\n"}),
    _bash("bash-plan-dir", "mkdir -p .stagecrew/plans/sub && echo x > .stagecrew/plans/mine.md"),
    _bash("bash-append-plan", "echo more >> .stagecrew/plans/*-earlier.md"),
    _bash("bash-background", "touch bg.txt", run_in_background=True),
]
READS: list[Attempt] = [
    Attempt("read", "read", {"file_path": "README.md"}),
    Attempt("grep", "grep", {"pattern": "hello, world"}),
    _bash("bash-ls", "ls -a"),
    _bash("bash-cat", "cat src/app.py"),
    _bash("bash-git-log", "git log --oneline"),
]
# What each read must show: proof it really read the workspace.
READ_SHOWS = {
    "read": "A tiny project.",
    "grep": "src/app.py",
    "bash-ls": "scratch.txt",
    "bash-cat": "hello, world",
    "bash-git-log": "add greet",
}


def plan_spec(workspace: Path, llm: ScriptedLLM, all_tools: bool) -> AgentSpec:
    """What ``actors/builder.py`` builds for ``crew run --agent plan`` (no user config)."""
    profile = discover_profiles(workspace, None)["plan"]
    assert profile.read_only and profile.tools != "*"
    return AgentSpec(
        session="plan-test",
        actor_id="plan-test-primary",
        workspace=str(workspace),
        prompt="Plan how to greet the whole world.",
        profile=profile.name,
        system_prompt=profile.system_prompt,
        tools=None if all_tools else list(profile.tools),
        read_only=profile.read_only,
        permissions=list(profile.permissions),
        model=ModelSpecWire(model="openai/planner", api_base=llm.base_url, num_retries=0),
        max_steps=min(100, profile.max_steps or 100),
    )


@pytest.fixture(params=["bwrap", "allowlist"])
def sandbox_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "allowlist":
        monkeypatch.setenv(sandbox.ENV_NO_BWRAP, "1")
        assert not sandbox.sandbox_available()
    else:
        monkeypatch.delenv(sandbox.ENV_NO_BWRAP, raising=False)
        if not sandbox.sandbox_available():
            pytest.skip("bubblewrap is not available or does not run here")
    return request.param


@pytest.mark.parametrize("all_tools", [False, True], ids=["profile-tools", "every-tool-offered"])
async def test_plan_agent_cannot_change_anything(
    repo: Path, sandbox_mode: str, all_tools: bool, scripted_llm: Callable
) -> None:
    attempts = WRITES + READS
    llm = scripted_llm([*(a.turn() for a in attempts), {"text": FINAL_PLAN}])
    spec = plan_spec(repo, llm, all_tools)
    before = state(repo)

    result, events = await run_agent_inprocess(spec)

    assert result.stop_reason is StopReason.DONE, result.error
    assert result.summary == FINAL_PLAN
    assert llm.exhausted == 0 and len(llm.requests) == len(attempts) + 1
    assert_unchanged(repo, before)

    finished = {f.call_id: f for f in events if isinstance(f, ToolFinished)}
    assert set(finished) == {a.id for a in attempts}
    offered = set(spec.tools or []) if not all_tools else None
    for attempt in WRITES:
        f = finished[attempt.id]
        exit_code = f.metadata.get("exit_code")
        assert f.is_error or (exit_code not in (None, 0)), f"{attempt.id} was not refused: {f}"
        if offered is not None and attempt.tool not in offered:
            assert f.content.startswith(f"Tool '{attempt.tool}' is not available"), f.content
        elif attempt.tool in ("write", "edit", "apply_patch"):
            assert f.content.startswith("Permission denied"), f.content
        elif attempt.tool == "git" or attempt.arguments.get("run_in_background"):
            assert "not allowed in read-only (plan) mode" in f.content, f.content
        elif sandbox_mode == "bwrap":
            # The command really ran, inside the sandbox, and the kernel said no.
            assert exit_code != 0, f.content
            assert "Read-only file system" in f.content or not attempt.says_erofs, f.content
        else:
            # The allowlist refused it before anything ran.
            assert f.is_error and f.content.startswith("Refused in read-only (plan) mode"), (
                f.content
            )
    for attempt in READS:
        f = finished[attempt.id]
        assert not f.is_error and f.metadata.get("exit_code") in (None, 0), f.content
        assert READ_SHOWS[attempt.id] in f.content, f.content

    # The model saw every refusal as the result of its call, in the next request.
    for i, attempt in enumerate(attempts, start=1):
        tool_message = llm.requests[i].body["messages"][-1]
        assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == attempt.id
        assert tool_message["content"] == finished[attempt.id].content

    # The plan is saved outside the tools; only then does the workspace change, and only there.
    saved = save_plan(repo, spec.session, result.summary)
    assert saved.parent == (repo / PLANS_DIR).resolve()
    assert saved.read_text() == FINAL_PLAN
    files_after, _ = state(repo)
    new = set(files_after) - set(before[0])
    assert new == {str(saved.relative_to(repo.resolve()))}


# Build mode refuses these too, for reasons of its own, so they cannot serve as a control.
_NO_CONTROL = {
    "git-tool-commit": "the git tool never commits on main (a protected branch)",
    "bash-background": "runs after the call returns; the agent kills it when the run ends",
}


@pytest.mark.parametrize(
    "attempt", [a for a in WRITES if a.id not in _NO_CONTROL], ids=lambda a: a.id
)
async def test_control_each_attempt_writes_outside_plan_mode(
    attempt: Attempt, repo: Path, monkeypatch: pytest.MonkeyPatch, scripted_llm: Callable
) -> None:
    """The same call with read-only off really changes the repository, so every refusal
    above stopped a real write (not a typo that would have failed anyway)."""
    for var in ("GIT_AUTHOR", "GIT_COMMITTER"):  # git commit and git stash need an identity
        monkeypatch.setenv(f"{var}_NAME", "t")
        monkeypatch.setenv(f"{var}_EMAIL", "t@example.invalid")
    llm = scripted_llm([attempt.turn(), {"text": "done"}])
    spec = plan_spec(repo, llm, all_tools=True).model_copy(
        update={"read_only": False, "permissions": [], "profile": "build"}
    )
    before = state(repo)
    result, events = await run_agent_inprocess(spec)
    assert result.stop_reason is StopReason.DONE, result.error
    [f] = [e for e in events if isinstance(e, ToolFinished)]
    assert not f.is_error and f.metadata.get("exit_code") in (None, 0), f.content
    assert state(repo) != before, f"{attempt.id} changed nothing even in build mode"


async def test_plan_mode_bash_can_still_run_read_only_programs_in_bwrap(
    repo: Path, monkeypatch: pytest.MonkeyPatch, scripted_llm: Callable
) -> None:
    """With bubblewrap any program may run (the allowlist would refuse python3): plan mode
    keeps its full power to investigate, e.g. running a script that only reads."""
    monkeypatch.delenv(sandbox.ENV_NO_BWRAP, raising=False)
    if not sandbox.sandbox_available():
        pytest.skip("bubblewrap is not available or does not run here")
    command = "python3 -c \"print(open('src/app.py').read().count('hello'))\""
    llm = scripted_llm([_bash("py", command).turn(), {"text": "# Plan\n"}])
    before = state(repo)
    result, events = await run_agent_inprocess(plan_spec(repo, llm, all_tools=False))
    assert result.stop_reason is StopReason.DONE
    [f] = [e for e in events if isinstance(e, ToolFinished)]
    assert not f.is_error and f.content.startswith("1\n[exit code 0]"), f.content
    assert_unchanged(repo, before)


async def test_planner_reaching_for_write_tools_is_refused_not_stopped(
    repo: Path, scripted_llm: Callable
) -> None:
    """A model used to build mode reaches for the write tools three times in a row. It should
    hear that they are not available in plan mode and go on planning: it sent well-formed
    calls, so this is not the format failure the limit exists for."""
    tries = [a for a in WRITES if a.tool in ("write", "edit", "apply_patch")][:3]
    llm = scripted_llm([*(a.turn() for a in tries), {"text": FINAL_PLAN}])
    before = state(repo)
    result, events = await run_agent_inprocess(plan_spec(repo, llm, all_tools=False))
    assert_unchanged(repo, before)
    assert all(e.is_error for e in events if isinstance(e, ToolFinished))
    assert result.stop_reason is StopReason.DONE, result.error


# ---------------------------------------------------------------------------------------------
# save_plan

_NAME = re.compile(r"^(\d{8}-\d{6})-(?P<session>.+?)(?:-(?P<n>\d+))?\.md$")


def test_save_plan_writes_a_titled_file_in_a_new_directory(tmp_path: Path) -> None:
    stamp = time.mktime((2025, 3, 4, 5, 6, 7, 0, 0, -1))
    path = save_plan(tmp_path, "s1", FINAL_PLAN, now=stamp)
    assert path == (tmp_path / ".stagecrew" / "plans" / "20250304-050607-s1.md").resolve()
    assert path.read_text() == FINAL_PLAN  # already opens with a heading: kept as it is
    assert os.listdir(path.parent) == [path.name], "no temporary file left behind"
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("text", "first_line", "title"),
    [
        ("Rename greet to welcome.\n\n1. Edit src/app.py\n", "# Rename greet to welcome.", None),
        ("Here is the plan.\n\n## Goal\nGreet.\n", "# Goal", "Goal"),
        ("\n\n  ### Steps ###\n- one\n", "### Steps ###", "Steps"),
        ("", "# Plan", "Plan"),
    ],
    ids=["first-line", "first-heading", "leading-blank-lines", "empty"],
)
def test_save_plan_title_line(
    tmp_path: Path, text: str, first_line: str, title: str | None
) -> None:
    """Every plan file opens with a title line: the plan's own heading when it starts with
    one, else ``# <first heading or first line>`` added on top of the plan, kept whole."""
    path = save_plan(tmp_path, "s", text)
    saved = path.read_text()
    assert saved.splitlines()[0] == first_line
    assert text.strip() in saved
    assert saved.endswith("\n") and not saved.endswith("\n\n")
    assert plan_title(text) == (title or first_line.removeprefix("# "))


def test_save_plan_never_overwrites(tmp_path: Path) -> None:
    now = time.time()
    paths = [save_plan(tmp_path, "same", f"# Plan {i}\n", now=now) for i in range(3)]
    assert len(set(paths)) == 3
    assert [p.read_text() for p in paths] == [f"# Plan {i}\n" for i in range(3)]
    names = [_NAME.match(p.name) for p in paths]
    assert all(names) and [m.group("n") for m in names] == [None, "2", "3"]  # type: ignore[union-attr]


def test_save_plan_keeps_the_session_inside_the_plans_dir(tmp_path: Path) -> None:
    path = save_plan(tmp_path, "../../etc/passwd", "# x\n")
    assert path.parent == (tmp_path / PLANS_DIR).resolve()
    match = _NAME.match(path.name)
    assert match and match.group("session") == "etc-passwd"


@pytest.mark.parametrize("link", [".stagecrew", ".stagecrew/plans"])
def test_save_plan_refuses_a_plans_dir_outside_the_workspace(tmp_path: Path, link: str) -> None:
    """A cloned repository can ship ``.stagecrew`` (or its ``plans``) as a symlink; the plan
    must not follow it anywhere."""
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / ".stagecrew").mkdir(parents=True)
    outside.mkdir()
    if link == ".stagecrew":
        (ws / ".stagecrew").rmdir()
    (ws / link).symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the workspace"):
        save_plan(ws, "s", "# x\n")
    assert list(outside.iterdir()) == [], "not even a directory may be made outside"
