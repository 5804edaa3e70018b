"""Build mode under bubblewrap: the workspace writable, the rest read-only, deny rules held by
the kernel whatever the command line looks like.

Every test runs real commands through the real bash tool with a real ``PermissionChecker``,
and checks the host afterwards (a file that does not exist, a config that did not change), so
"the command failed" is never mistaken for "the sandbox held". The controls run the same
command without the rule or without the sandbox and see it succeed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from stagecrew.tools import sandbox, shell
from stagecrew.tools.base import SandboxPolicy, ToolContext, ToolResult, execute
from stagecrew.tools.permissions import DEFAULT_RULES, PermissionChecker
from stagecrew.tools.registry import default_tools

TOOLS = default_tools()
SECRET = "TOP-SECRET-VALUE-4711"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}

needs_bwrap = pytest.mark.skipif(
    not sandbox.sandbox_available(), reason="bubblewrap does not work here"
)
pytestmark = needs_bwrap


@pytest.fixture(autouse=True)
def quick_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shell, "KILL_GRACE_S", 0.3)
    monkeypatch.setattr(shell, "DRAIN_GRACE_S", 0.3)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A git repository with a secret, a protected directory and a nested key file."""
    repo = tmp_path / "ws"
    (repo / "secret").mkdir(parents=True)
    (repo / "sub" / "deeper").mkdir(parents=True)
    (repo / ".env").write_text(f"API_KEY={SECRET}\n")
    (repo / "secret" / "plan.txt").write_text("the plan\n")
    (repo / "sub" / "deeper" / "server.pem").write_text(f"-----{SECRET}-----\n")
    (repo / "README.md").write_text("# repo\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "init")
    return repo


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside the workspace and outside /tmp that this user can write: writes
    into it fail under the sandbox because of the sandbox, not because of permissions."""
    base = Path("/var/tmp")
    if not os.access(base, os.W_OK):
        pytest.skip("/var/tmp is not writable here")
    path = Path(tempfile.mkdtemp(prefix="sc-outside-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


RULES = ["deny read(.env)", "deny read(*.pem)", "deny edit(secret/**)"]


def make_ctx(
    ws: Path, rules: list[str] | None = None, notes: list[str] | None = None, **policy: Any
) -> ToolContext:
    checker = PermissionChecker([*DEFAULT_RULES, *(RULES if rules is None else rules)])
    notify = notes.append if notes is not None else None
    return ToolContext(
        workspace=ws,
        session_dir=ws.parent / "session",
        sandbox=SandboxPolicy(rules=checker, notify=notify, **policy),
    )


@pytest.fixture
def ctx(ws: Path) -> Iterator[ToolContext]:
    c = make_ctx(ws)
    yield c
    cleanup(c)


def cleanup(c: ToolContext) -> None:
    leftovers = [pg for pg in c.processes.pgids if shell.group_alive(pg)]
    c.processes.kill_all()
    for job in c.state.get("bash_jobs", {}).values():
        job.popen.wait(timeout=5)
    assert not leftovers, f"process groups left running: {leftovers}"


async def bash(ctx: ToolContext, command: str, **kw: Any) -> ToolResult:
    return await execute(TOOLS, "bash", {"command": command, **kw}, ctx)


def marker_procs(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = " ".join(p.info["cmdline"] or [])
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in cmdline:
                found.append(p)
        except psutil.Error:
            pass
    return found


# -- the file system ---------------------------------------------------------------------------


async def test_commands_are_sandboxed_and_the_workspace_is_writable(
    ctx: ToolContext, ws: Path
) -> None:
    r = await bash(
        ctx, "echo made > made.txt && mkdir -p new/dir && echo x > new/dir/f && cat made.txt"
    )
    assert r.content.startswith("made") and r.metadata["exit_code"] == 0
    assert r.metadata["sandboxed"] is True
    assert (ws / "made.txt").read_text() == "made\n"
    assert (ws / "new" / "dir" / "f").exists()


async def test_writes_outside_the_workspace_fail(ctx: ToolContext, ws: Path, outside: Path) -> None:
    sibling = ws.parent / "sibling"
    sibling.mkdir()
    r = await bash(
        ctx,
        f"touch {outside}/x; echo rc=$?; echo y > {sibling}/y; echo rc=$?; "
        f"python3 -c \"open('{outside}/z', 'w').write('z')\"; echo rc=$?",
    )
    assert r.content.count("rc=1") == 3, r.content
    assert "Read-only file system" in r.content
    assert list(outside.iterdir()) == [] and list(sibling.iterdir()) == []
    # Control: the same writes work without the sandbox, so it is the sandbox that held.
    plain = make_ctx(ws, mode="off")
    r = await bash(plain, f"touch {outside}/x && echo y > {sibling}/y && echo ok")
    assert r.content.startswith("ok")
    assert (outside / "x").exists() and (sibling / "y").exists()


async def test_read_only_hint_names_the_way_out(ctx: ToolContext, outside: Path) -> None:
    r = await bash(ctx, f"touch {outside}/x")
    assert "[exit code 1]" in r.content and "sandbox.writable" in r.content


async def test_deny_read_holds_against_any_command(ctx: ToolContext, ws: Path) -> None:
    commands = [
        "cat .env",
        "python3 -c \"print(open('.e' + 'nv').read())\"",
        "ln -s .env alias && cat alias",
        "cp .env copy.txt; cat copy.txt",
        "ln .env hard 2>&1; cat hard",
        "cat sub/deeper/server.pem",
        "cd sub && cat deeper/*.pem",
        "grep -r API_KEY . ; tar cf - .env | tar xOf -",
    ]
    for command in commands:
        r = await bash(ctx, command)
        assert SECRET not in r.content, (command, r.content)
    assert (ws / ".env").read_text() == f"API_KEY={SECRET}\n"  # masked, not changed


async def test_masked_file_cannot_be_replaced(ctx: ToolContext, ws: Path) -> None:
    r = await bash(ctx, "echo stolen > .env; rm -f .env; mv .env gone; echo done")
    assert "done" in r.content
    assert (ws / ".env").read_text() == f"API_KEY={SECRET}\n"
    assert not (ws / "gone").exists()


async def test_control_without_the_rule_the_secret_is_readable(ws: Path) -> None:
    """The masks come from the rules: the same commands read the file when no rule denies it
    (the shipped ``ask read(.env)`` is not a deny: a person could have said yes)."""
    c = make_ctx(ws, rules=[])
    try:
        r = await bash(c, "cat .env; cat sub/deeper/server.pem")
        assert r.content.count(SECRET) == 2
    finally:
        cleanup(c)


async def test_a_later_allow_lifts_the_mask(ws: Path) -> None:
    c = make_ctx(ws, rules=["deny read(*.pem)", "allow read(sub/deeper/server.pem)"])
    try:
        r = await bash(c, "cat sub/deeper/server.pem")
        assert SECRET in r.content
    finally:
        cleanup(c)


async def test_claude_code_rules_are_enforced_too(ws: Path) -> None:
    c = make_ctx(ws, rules=["deny Read(./.env) from .claude/settings.json"])
    try:
        r = await bash(c, "python3 -c \"print(open('.env').read())\"")
        assert SECRET not in r.content and "Permission denied" in r.content
    finally:
        cleanup(c)


async def test_deny_rule_for_a_path_outside_the_workspace(ws: Path, outside: Path) -> None:
    (outside / "token.txt").write_text(SECRET)
    c = make_ctx(ws, rules=[f"deny read({outside}/*.txt)"])
    try:
        r = await bash(c, f"cat {outside}/token.txt")
        assert SECRET not in r.content
    finally:
        cleanup(c)


async def test_a_secret_created_later_is_masked_at_the_next_command(
    ctx: ToolContext, ws: Path
) -> None:
    r = await bash(ctx, "cat README.md")  # fills the walk's cache
    assert "# repo" in r.content
    (ws / "sub" / "deeper" / "new.pem").write_text(SECRET)
    (ws / "sub" / ".env").write_text(SECRET)
    r = await bash(ctx, "cat sub/deeper/new.pem sub/.env")
    assert SECRET not in r.content


async def test_deny_edit_paths_are_read_only(ctx: ToolContext, ws: Path) -> None:
    r = await bash(
        ctx,
        "cat secret/plan.txt; echo x > secret/f; echo rc=$?; echo x >> secret/plan.txt; "
        "echo rc=$?; rm secret/plan.txt; echo rc=$?; mv secret elsewhere; echo rc=$?",
    )
    assert r.content.startswith("the plan")
    assert r.content.count("rc=1") == 4, r.content
    assert sorted(p.name for p in (ws / "secret").iterdir()) == ["plan.txt"]
    assert (ws / "secret" / "plan.txt").read_text() == "the plan\n"


async def test_git_hooks_and_config_are_read_only_but_commits_work(
    ctx: ToolContext, ws: Path
) -> None:
    config_before = (ws / ".git" / "config").read_bytes()
    head_before = git(ws, "rev-parse", "HEAD")
    r = await bash(
        ctx,
        "printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit; echo rc=$?; "
        "git config alias.yolo push; echo rc=$?; "
        "git config core.hooksPath /tmp/hooks; echo rc=$?; "
        "mv .git .git-aside; echo rc=$?; "
        "echo change >> README.md && git add README.md && "
        "git -c user.name=t -c user.email=t@example.invalid commit -qm agent && echo committed",
    )
    assert "committed" in r.content, r.content
    assert r.content.count("rc=0") == 0, r.content
    assert not (ws / ".git" / "hooks" / "pre-commit").exists()
    assert (ws / ".git" / "config").read_bytes() == config_before
    assert not (ws / ".git-aside").exists()
    assert git(ws, "rev-parse", "HEAD") != head_before  # objects and refs were written
    assert git(ws, "log", "-1", "--format=%s").strip() == "agent"


async def test_commits_work_in_a_linked_worktree(ws: Path) -> None:
    """Max Mode's candidates work in linked worktrees, whose git directories live in the
    main repository, outside their workspace."""
    tree = ws.parent / "tree"
    git(ws, "worktree", "add", "-q", "-b", "feature", str(tree))
    c = make_ctx(tree)
    try:
        r = await bash(
            c,
            "echo x >> README.md && git -c user.name=t -c user.email=t@example.invalid "
            "commit -qam in-tree && echo committed; echo 'gitdir: /elsewhere' > .git; echo rc=$?; "
            "echo x > ../ws/README.md",
        )
        assert "committed" in r.content.splitlines() and "rc=1" in r.content, r.content
        # The main repository's git directory is writable, its work tree is not (here under
        # the private /tmp, so the write lands in the sandbox's scratch, not in the repo).
        assert (ws / "README.md").read_text() == "# repo\n"
        assert git(ws, "log", "-1", "--format=%s", "feature").strip() == "in-tree"
        assert (tree / ".git").read_text().startswith("gitdir: ")
        assert "elsewhere" not in (tree / ".git").read_text()
    finally:
        cleanup(c)


async def test_a_hooks_path_inside_the_workspace_is_read_only(ws: Path) -> None:
    (ws / ".husky").mkdir()
    git(ws, "config", "core.hooksPath", ".husky")
    c = make_ctx(ws)
    try:
        r = await bash(c, "echo 'echo pwned' > .husky/pre-commit; echo rc=$?")
        assert "rc=1" in r.content
        assert not (ws / ".husky" / "pre-commit").exists()
    finally:
        cleanup(c)


async def test_stagecrew_and_claude_settings_are_read_only(ws: Path) -> None:
    (ws / ".stagecrew" / "state").mkdir(parents=True)
    (ws / ".stagecrew" / "config.json").write_text("{}")
    (ws / ".stagecrew" / "state" / "events.jsonl").write_text(SECRET)
    (ws / ".stagecrew" / "plans").mkdir()
    (ws / ".claude").mkdir()
    (ws / ".mcp.json").write_text("{}")
    c = make_ctx(ws)
    try:
        r = await bash(c, "echo plan > .stagecrew/plans/p.md && echo notes are writable")
        assert "notes are writable" in r.content, r.content
        r = await bash(
            c,
            'echo \'{"sandbox": {"mode": "off"}}\' > .stagecrew/config.json; echo rc=$?; '
            "echo '{}' > .claude/settings.json; echo rc=$?; echo '{}' >> .mcp.json; echo rc=$?; "
            "cat .stagecrew/state/events.jsonl; ls -A .stagecrew/state | wc -l",
        )
        assert r.content.count("rc=1") == 3, r.content
        assert SECRET not in r.content and r.content.splitlines()[-2] == "0"
        assert (ws / ".stagecrew" / "config.json").read_text() == "{}"
        assert not (ws / ".claude" / "settings.json").exists()
    finally:
        cleanup(c)


async def test_the_head_record_and_its_token_are_hidden(
    ws: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head record holds the control port's token (with it, a command could start a
    session with the sandbox off): the runtime home is an empty directory inside."""
    home = outside / "stagecrew-home"
    home.mkdir()
    (home / "head.json").write_text(json.dumps({"token": SECRET}))
    monkeypatch.setenv("STAGECREW_HOME", str(home))
    c = make_ctx(ws)
    try:
        r = await bash(c, f"cat {home}/head.json; ls -A {home} | wc -l")
        assert SECRET not in r.content and r.content.splitlines()[-2].strip() == "0", r.content
        off = make_ctx(ws, mode="off")
        r = await bash(off, f"cat {home}/head.json")
        assert SECRET in r.content  # the control: readable without the sandbox
    finally:
        cleanup(c)


async def test_tmp_is_private_and_shared_between_calls(ctx: ToolContext) -> None:
    marker = f"sc-private-{time.monotonic_ns()}"
    await bash(ctx, f"echo kept > /tmp/{marker}")
    r = await bash(ctx, f"cat /tmp/{marker}; echo $TMPDIR; ls -A /run | wc -l")
    assert r.content.splitlines()[:3] == ["kept", "/tmp", "0"]
    assert not Path("/tmp", marker).exists()


async def test_tool_caches_are_writable_but_not_the_persons(ctx: ToolContext) -> None:
    r = await bash(
        ctx,
        'mkdir -p "$XDG_CACHE_HOME/tool" && echo ok > "$XDG_CACHE_HOME/tool/f" '
        '&& echo "$XDG_CACHE_HOME"',
    )
    assert r.metadata["exit_code"] == 0, r.content
    cache = Path(r.content.splitlines()[0])
    assert (cache / "tool" / "f").exists()
    assert "sandbox-cache" in str(cache)


async def test_sandbox_writable_adds_a_path(ws: Path, outside: Path) -> None:
    c = make_ctx(ws, writable=(str(outside),))
    try:
        r = await bash(c, f"touch {outside}/allowed && echo ok")
        assert r.content.startswith("ok") and (outside / "allowed").exists()
    finally:
        cleanup(c)


async def test_a_deny_edit_everything_rule_keeps_the_workspace_read_only(ws: Path) -> None:
    c = make_ctx(ws, rules=["deny edit", "deny read(.env)"])
    try:
        r = await bash(c, "touch new.txt; echo rc=$?; cat README.md; cat .env")
        assert "rc=1" in r.content and "# repo" in r.content
        assert SECRET not in r.content  # the masks still cover the read-only workspace
        assert not (ws / "new.txt").exists()
    finally:
        cleanup(c)


# -- the network -------------------------------------------------------------------------------


CONNECT = (
    "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3); "
    "print('connected')\""
)


@pytest.fixture
def host_server() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.mark.parametrize(
    ("network", "reaches"), [("allow", True), ("deny", False), ("loopback", False)]
)
async def test_network_modes_against_a_host_server(
    ws: Path, host_server: int, network: str, reaches: bool
) -> None:
    c = make_ctx(ws, network=network)
    try:
        r = await bash(c, CONNECT.format(port=host_server))
        assert ("connected" in r.content) is reaches, r.content
    finally:
        cleanup(c)


async def test_loopback_reaches_a_server_the_command_started(ws: Path) -> None:
    script = (
        "import socket, threading\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
        "threading.Thread(target=s.accept, daemon=True).start()\n"
        "socket.create_connection(s.getsockname(), timeout=3); print('own server reached')\n"
    )
    c = make_ctx(ws, network="loopback")
    try:
        r = await bash(c, f"python3 - <<'EOF'\n{script}EOF")
        assert "own server reached" in r.content, r.content
    finally:
        cleanup(c)


# -- processes ---------------------------------------------------------------------------------


async def test_cd_persists_under_the_sandbox(ctx: ToolContext, ws: Path) -> None:
    r = await bash(ctx, "cd sub/deeper")
    assert "working directory is now sub/deeper" in r.content
    r = await bash(ctx, "pwd; cd .. && exit 4")
    assert r.content.splitlines()[0] == str(ws / "sub" / "deeper")
    assert ctx.cwd == ws / "sub" and "[exit code 4]" in r.content
    r = await bash(ctx, "cd /var")
    assert "outside the workspace" in r.content and ctx.cwd == ws


async def test_timeout_kills_the_whole_sandboxed_tree(ctx: ToolContext) -> None:
    marker = f"sc-sbx-timeout-{time.monotonic_ns()}"
    cmd = (
        f"echo started; (exec -a {marker} sleep 30) & "
        f"setsid bash -c 'exec -a {marker} sleep 30' & "
        "trap '' TERM; sleep 30"
    )
    started = time.monotonic()
    r = await bash(ctx, cmd, timeout=600)
    assert r.is_error and "started" in r.content and "timed out" in r.content
    assert time.monotonic() - started < 5
    await asyncio.sleep(0.1)
    assert marker_procs(marker) == []
    assert not ctx.processes.pgids


async def test_a_daemon_left_by_a_call_ends_with_it(ctx: ToolContext) -> None:
    """Each call has its own PID namespace: what it leaves behind ends with it (outside the
    sandbox a redirected ``cmd &`` would outlive the call)."""
    marker = f"sc-sbx-daemon-{time.monotonic_ns()}"
    r = await bash(ctx, f"(exec -a {marker} sleep 30) >/dev/null 2>&1 & echo started")
    assert r.content.startswith("started")
    await asyncio.sleep(0.2)
    assert marker_procs(marker) == []


async def test_cancellation_kills_the_sandboxed_command(ctx: ToolContext) -> None:
    marker = f"sc-sbx-cancel-{time.monotonic_ns()}"
    task = asyncio.create_task(bash(ctx, f"exec -a {marker} sleep 30"))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if marker_procs(marker):
            break
    assert marker_procs(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert marker_procs(marker) == []


async def test_background_job_runs_sandboxed_and_is_killed(ctx: ToolContext, outside: Path) -> None:
    marker = f"sc-sbx-bg-{time.monotonic_ns()}"
    r = await bash(
        ctx,
        f"touch {outside}/bg; echo rc=$?; echo up; exec -a {marker} sleep 30",
        run_in_background=True,
    )
    job_id = r.metadata["bash_id"]
    seen = ""
    for _ in range(100):
        out = await execute(TOOLS, "bash_output", {"bash_id": job_id}, ctx)
        seen += out.content
        if "up" in seen and marker_procs(marker):
            break
        await asyncio.sleep(0.05)
    assert "rc=1" in seen and "up" in seen and "running" in seen
    assert not (outside / "bg").exists()
    k = await execute(TOOLS, "kill_shell", {"shell_id": job_id}, ctx)
    assert "Stopped" in k.content
    assert marker_procs(marker) == []


# -- modes and the missing-bubblewrap notice ---------------------------------------------------


async def test_mode_off_runs_plainly(ws: Path, outside: Path) -> None:
    notes: list[str] = []
    c = make_ctx(ws, notes=notes, mode="off")
    try:
        r = await bash(c, f"cat .env; touch {outside}/off")
        assert SECRET in r.content and (outside / "off").exists()
        assert r.metadata["sandboxed"] is False and notes == []
    finally:
        cleanup(c)


async def test_without_bubblewrap_auto_runs_plainly_and_says_so_once(
    ws: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.ENV_NO_BWRAP, "1")
    notes: list[str] = []
    c = make_ctx(ws, notes=notes)
    try:
        await bash(c, "true")
        r = await bash(c, f"touch {outside}/plain && echo ok")
        assert r.content.startswith("ok") and r.metadata["sandboxed"] is False
        assert len(notes) == 1
        assert "bash runs without a sandbox" in notes[0] and "apt install bubblewrap" in notes[0]
        # Another agent of the same session (a subagent, the next turn) stays quiet.
        other = make_ctx(ws, notes=notes)
        await bash(other, "true")
        cleanup(other)
        assert len(notes) == 1
    finally:
        cleanup(c)


async def test_required_refuses_to_run_without_bubblewrap(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.ENV_NO_BWRAP, "1")
    c = make_ctx(ws, mode="required")
    try:
        r = await bash(c, "touch refused.txt")
        assert r.is_error and "sandbox.mode: required" in r.content
        assert "apt install bubblewrap" in r.content and len(r.content.splitlines()) == 1
        r = await bash(c, "touch refused.txt", run_in_background=True)
        assert r.is_error and "sandbox.mode: required" in r.content
        assert not (ws / "refused.txt").exists()
    finally:
        cleanup(c)


def test_a_tool_context_without_a_policy_is_not_confined(ws: Path) -> None:
    assert shell.build_confinement(ToolContext(workspace=ws), {}) is None


# -- the loose prefilter never misses what the checker denies ----------------------------------


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ("deny read(.env)", "a/b/.env"),
        ("deny read(*.pem)", "x/y/z.pem"),
        ("deny read(secret/**)", "secret"),
        ("deny read(secret/**)", "secret/a/b.txt"),
        ("deny read(secret/*)", "secret/a"),
        ("deny read(**/creds/*.json)", "creds/a.json"),
        ("deny read(src/[ab].txt)", "src/a.txt"),
        ("deny read(id_rsa*)", "keys/id_rsa.pub"),
        ("deny Read(./config/*.yml) from .claude/settings.json", "config/prod.yml"),
        ("deny Read(/private) from .claude/settings.json", "private/x"),
        ("deny Edit(build/) from .claude/settings.json", "build/out/x.o"),
    ],
)
def test_prefilter_matches_every_path_the_checker_denies(rule: str, path: str, ws: Path) -> None:
    checker = PermissionChecker([rule])
    absolute = ws / path
    tool = "edit" if "Edit" in rule else "read"
    assert checker.check(tool, {"file_path": str(absolute)}, ws).action == "deny"
    loose = sandbox._loose_regex([str(r.pattern) for r in checker.rules])
    assert loose is not None and loose.search(str(absolute))


def test_walk_cap_warns_once(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "WALK_CAP", 3)
    notes: list[str] = []
    c = make_ctx(ws, notes=notes)
    first = sandbox.build_sandbox(c, {})
    second = sandbox.build_sandbox(c, {})
    assert first is not None and "deny rules were applied" in first.warning
    assert second is not None and len(notes) == 1


async def test_two_agents_do_not_share_a_private_tmp(ws: Path) -> None:
    """Two agents (a parent and its subagent) each get their own /tmp."""
    a, b = make_ctx(ws), make_ctx(ws)
    try:
        await bash(a, "echo a > /tmp/which")
        r = await bash(b, "cat /tmp/which 2>&1")
        assert "No such file" in r.content
    finally:
        cleanup(a)
        cleanup(b)


# -- through the agent -------------------------------------------------------------------------


def tool_turn(name: str, **arguments: object) -> dict[str, object]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


# Commands that name the secret only at run time, so the pattern checks in front of the tool
# cannot see it: only the sandbox stands between them and the file.
SNEAKY_READ = (
    "python3 -c \"print(open('.e' + 'nv').read())\"; "
    "python3 -c \"import os; os.symlink('.e' + 'nv', 'alias')\" && cat alias"
)
SNEAKY_WRITE = (
    "printf 'echo pwned' > .git/hooks/pre-commit; git config alias.yolo push; "
    "d=secr; echo x > ${{d}}et/planted; touch {outside}/planted; "
    "echo change >> README.md && git add README.md && "
    "git -c user.name=t -c user.email=t@example.invalid commit -qm agent "
    "&& echo committed"
)


def write_config(ws: Path, **sandbox_config: object) -> None:
    import json

    (ws / ".stagecrew").mkdir(exist_ok=True)
    config = {"permissions": ["deny read(.env)", "deny edit(secret/**)"], "sandbox": sandbox_config}
    (ws / ".stagecrew" / "config.json").write_text(json.dumps(config))


def crew_run(ws: Path, script: list[dict[str, object]]) -> tuple[dict[str, Any], list[str]]:
    """``crew run`` with the scripted model; the result and every tool result sent back."""
    import json

    from conftest import crew

    from stagecrew.testing.scripted_llm import ScriptedLLM

    with ScriptedLLM(script) as llm:
        proc = crew(
            "run",
            "Try the sandbox.",
            "--model",
            "openai/scripted",
            "--api-base",
            llm.base_url,
            "--output-format",
            "json",
            cwd=ws,
        )
        requests = [r.body for r in llm.requests]
    assert proc.returncode == 0, proc.stderr
    tool_results = [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]
    return json.loads(proc.stdout), tool_results


@pytest.mark.ray
def test_crew_run_bash_is_sandboxed_by_default(ray_head: object, ws: Path, outside: Path) -> None:
    write_config(ws)
    config_before = (ws / ".git" / "config").read_bytes()
    script = [
        tool_turn("bash", command=SNEAKY_READ),
        tool_turn("bash", command=SNEAKY_WRITE.format(outside=outside)),
        {"text": "done"},
    ]
    result, tool_results = crew_run(ws, script)
    assert result["stop_reason"] == "done"
    assert len(tool_results) == 2
    assert SECRET not in tool_results[0] and "Permission denied" in tool_results[0]
    assert "committed" in tool_results[1].splitlines(), tool_results[1]
    assert not (ws / ".git" / "hooks" / "pre-commit").exists()
    assert (ws / ".git" / "config").read_bytes() == config_before
    assert not (ws / "secret" / "planted").exists() and not (outside / "planted").exists()
    assert git(ws, "log", "-1", "--format=%s").strip() == "agent"


@pytest.mark.ray
def test_crew_run_control_with_the_sandbox_off(ray_head: object, ws: Path) -> None:
    """The same read with ``sandbox.mode: off`` gets the secret: in the test above it was the
    sandbox, not the pattern checks, that held."""
    write_config(ws, mode="off")
    result, tool_results = crew_run(ws, [tool_turn("bash", command=SNEAKY_READ), {"text": "ok"}])
    assert result["stop_reason"] == "done"
    assert tool_results[0].count(SECRET) == 2


async def test_agent_says_once_that_bash_runs_unsandboxed(
    ws: Path, monkeypatch: pytest.MonkeyPatch, scripted_llm: Any
) -> None:
    """Through the real agent loop (in-process, scripted model over HTTP): without bubblewrap
    the first bash call brings one warning Notice; the second brings none."""
    from stagecrew.actors.inprocess import run_agent_inprocess
    from stagecrew.actors.spec import AgentSpec
    from stagecrew.messages import ModelSpecWire, Notice, StopReason

    monkeypatch.setenv(sandbox.ENV_NO_BWRAP, "1")
    llm = scripted_llm(
        [tool_turn("bash", command="true"), tool_turn("bash", command="true"), {"text": "ok"}]
    )
    spec = AgentSpec(
        session="sbx-notice",
        actor_id="sbx-notice-primary",
        workspace=str(ws),
        prompt="Run two commands.",
        model=ModelSpecWire(model="openai/x", api_base=llm.base_url, num_retries=0),
        session_dir=str(ws.parent / "session"),
        ask_policy="allow",
    )
    result, events = await run_agent_inprocess(spec)
    assert result.stop_reason is StopReason.DONE, result.error
    notices = [e for e in events if isinstance(e, Notice) and "without a sandbox" in e.text]
    assert len(notices) == 1 and notices[0].level == "warning"
    assert "apt install bubblewrap" in notices[0].text


def test_private_tmp_dirs_of_dead_agents_are_swept(ws: Path) -> None:
    """Agent hosts are killed after their run, before any cleanup of theirs can run: the next
    agent removes what they left (and nothing of a live one)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    root = Path(tempfile.gettempdir())
    stale = root / f"stagecrew-sandbox-tmp-{dead.pid}-test"
    alive = root / f"stagecrew-sandbox-tmp-{os.getpid()}-test"
    for path in (stale, alive):
        (path / "left-over").mkdir(parents=True, exist_ok=True)
    try:
        c = make_ctx(ws)
        built = sandbox.build_sandbox(c, {})
        assert built is not None and built.tmp_dir.name.startswith(
            f"stagecrew-sandbox-tmp-{os.getpid()}-"
        )
        assert not stale.exists() and alive.exists()
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)
