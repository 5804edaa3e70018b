"""Every way around a deny rule that issue 13 found, each one now a test that fails to get
around it.

Three layers of proof. The real ``PermissionChecker`` answers every bypass with a deny (and
the forms that must stay allowed stay allowed: a deny rule must never loosen an allow). The
real tools, with the agent's policy attached, keep protected files out of what grep, glob,
ls and apply_patch do. And ``crew run`` end to end, with explicit deny rules in the project
config and a scripted model that tries the bypasses: the file survives, the remote's refs do
not move, the secret never reaches the model, and plan mode without bubblewrap refuses the
abbreviated options that used to change the workspace. Each end-to-end run packs several
attempts into one scripted session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import crew, git

from stagecrew.tools import sandbox, search
from stagecrew.tools.base import ToolContext, ToolResult, execute
from stagecrew.tools.permissions import (
    DEFAULT_RULES,
    Decision,
    PermissionChecker,
    attach_path_policy,
    patch_paths,
)
from stagecrew.tools.registry import default_tools
from stagecrew.tools.sandbox import SandboxRefused, check_readonly_command, readonly_argv

TOOLS = default_tools()
SECRET = "SK-LIVE-4242-SENTINEL"
OTHER_SECRET = "SECOND-SECRET-0077"
RM_GIT_RULES = ["deny bash(rm *)", "deny bash(git push *)"]
PATH_RULES = ["deny read(.env)", "deny edit(secret/**)"]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A git repository with a victim file, a secret and a protected directory."""
    root = tmp_path / "ws"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "f").write_text("victim\n")
    (root / ".env").write_text(f"KEY={SECRET}\n")
    (root / "secret").mkdir()
    (root / "secret" / "kept.txt").write_text("protected\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("KEY = 'not the secret'\n")
    return root


def checker(*extra: str, policy: str = "deny") -> PermissionChecker:
    """The shipped defaults, then the rules under test, as a headless session has them."""
    return PermissionChecker([*DEFAULT_RULES, *extra], ask_policy=policy)  # type: ignore[arg-type]


def bash(rules: PermissionChecker, command: str, ws: Path) -> Decision:
    return rules.check("bash", {"command": command}, ws)


# -- 1. deny fails closed ------------------------------------------------------------------------

RM_BYPASSES = [
    # the four the issue found
    "setsid rm f",
    "ionice rm f",
    "flock /tmp/x rm f",
    "script -qc 'rm f' /dev/null",
    # wrappers, known or not
    "timeout 5 rm f",
    "echo f | xargs rm",
    "find . -name f -exec rm {} \\;",
    "find . -name f -execdir rm {} +",
    "find . -name f -ok rm {} \\;",
    "nohup rm f",
    "busybox rm f",
    "nice -n 5 rm f",
    "stdbuf -oL rm f",
    "chrt 10 rm f",
    "taskset 0x1 rm f",
    "ionice -c 3 -n 7 rm f",
    "unbuffer rm f",
    "setsid -w nice ionice rm f",
    "strace -o /dev/null rm f",
    "some-wrapper-nobody-knows --flag value rm f",
    "/usr/bin/some-wrapper /bin/rm f",
    "foo --exec=rm f",
    "foo -crm f",
    # command strings of shells and of tools that take one
    "bash -c 'rm f'",
    "sh -c 'rm f'",
    "zsh -c 'rm f'",
    "dash -c 'rm f'",
    "fish -c 'rm f'",
    "su -c 'rm f' root",
    "su root -c 'rm f'",
    "runuser -u nobody -- rm f",
    "sg staff -c 'rm f'",
    "watch rm f",
    "watch -n 1 'rm f'",
    "parallel rm ::: f",
    "parallel ::: 'rm f'",
    "env -S 'rm f'",
    "ssh host rm f",
    "ssh -p 22 host 'rm f'",
    "flock /tmp/x -c 'rm f'",
    "script -q -c 'rm f' /dev/null",
    # any quoted argument that parses as a command
    "perl -e 'system(\"rm f\")'",
    "python3 -c \"import os; os.system('rm f')\"",
    "docker exec box sh -c 'rm f'",
    "somecmd --command='rm f'",
    "unknown -c'rm f'",
    "echo 'rm f' | sh",
    "type rm && rm f",
    "python3 <<'EOF'\nimport subprocess\nsubprocess.run('rm f', shell=True)\nEOF",
]


@pytest.mark.parametrize("command", RM_BYPASSES)
def test_rm_is_denied_wherever_it_could_run(command: str, ws: Path) -> None:
    decision = bash(checker(*RM_GIT_RULES), command, ws)
    assert decision.action == "deny", (command, decision.reason)
    assert decision.rule == "deny bash(rm *)"


@pytest.mark.parametrize("command", ["setsid rm f", "flock /tmp/x rm f", "watch rm f"])
def test_claude_code_deny_rules_fail_closed_too(command: str, ws: Path) -> None:
    rules = checker("deny Bash(rm:*) from .claude/settings.json")
    assert bash(rules, command, ws).action == "deny"


def test_a_deny_rule_with_a_leading_wildcard_looks_at_every_word(ws: Path) -> None:
    rules = checker("deny bash(*shred*)")
    assert bash(rules, "setsid -f /usr/bin/shred -u f", ws).action == "deny"
    assert bash(rules, "ls -la", ws).action == "allow"


@pytest.fixture
def remote_repo(ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local bare remote; aliases in the repository's config (``yolo`` = push, an alias of
    it, a ``!shell`` alias) and one in the person's global config (a private HOME)."""
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    git(ws, "remote", "add", "origin", str(bare))
    git(ws, "config", "alias.yolo", "push")
    git(ws, "config", "alias.yolo2", "yolo --force")  # an alias of an alias
    git(ws, "config", "alias.shipit", "!git push origin main && rm f")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    git(ws, "config", "--global", "alias.nuke", "!rm f")
    return bare


GIT_PUSH_BYPASSES = [
    "git -c alias.yolo=push yolo origin main",
    "git -c alias.y='push --force' y origin main",
    "git -C . -c alias.yolo=push yolo origin main",
    "git yolo origin main",  # the alias in .git/config, read at check time
    "git yolo2 origin main",
    "git shipit",  # a !shell alias, parsed as the commands it runs
    "git config alias.zz push && git zz origin main",
    "git config --global alias.zz push; git zz origin main",
    "GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=alias.zz GIT_CONFIG_VALUE_0=push git zz origin main",
    "GIT_CONFIG_PARAMETERS=\"'alias.zz'='push'\" git zz origin main",
    "V=push git --config-env=alias.zz=V zz origin main",
    "git neveraliased origin main",  # unknown, maybe an alias set some other way: fail closed
    "setsid git push origin main",
    "sh -c 'git -c alias.p=push p'",
]


@pytest.mark.parametrize("command", GIT_PUSH_BYPASSES)
def test_git_push_is_denied_through_aliases(command: str, ws: Path, remote_repo: Path) -> None:
    decision = bash(checker(*RM_GIT_RULES), command, ws)
    assert decision.action == "deny", (command, decision.reason)


def test_a_shell_alias_runs_what_it_says(ws: Path, remote_repo: Path) -> None:
    # No git rule here, so only resolving the alias (not guessing) can find the rm.
    for command in ("git shipit", "git nuke", "git -c 'alias.x=!rm f' x"):
        decision = bash(checker("deny bash(rm *)"), command, ws)
        assert decision.action == "deny" and decision.rule == "deny bash(rm *)", command
    assert bash(checker("deny bash(rm *)"), "git status", ws).action == "allow"
    # The alias also asks under the shipped ``ask bash(git push *)`` alone.
    assert bash(checker(policy="ask"), "git yolo origin main", ws).action == "ask"
    assert bash(checker(policy="ask"), "git -c alias.p=push p", ws).action == "ask"


@pytest.mark.parametrize(
    "command",
    [
        "ls -la",
        "git status",
        "git log --oneline -5",
        "git -C . diff --stat",
        "cat README.md src/app.py",
        "pytest -q",
        "grep -rn KEY src",
        "find . -name '*.py' -print",
        "echo done",
        "which rm && command -v git && man git",
    ],
)
def test_everyday_commands_stay_allowed(command: str, ws: Path, remote_repo: Path) -> None:
    rules = checker(*RM_GIT_RULES, *PATH_RULES)
    assert bash(rules, command, ws).action == "allow", command


def test_wider_matching_never_loosens_an_allow(ws: Path) -> None:
    """Only deny (and ask, through known wrappers and aliases) match more; an allow rule
    matches exactly what it matched before."""
    only_rm = PermissionChecker(["allow bash(rm *)"])
    assert only_rm.check("bash", {"command": "rm f"}, ws).action == "allow"
    assert only_rm.check("bash", {"command": "setsid rm f"}, ws).action == "ask"
    assert only_rm.check("bash", {"command": "weird rm f"}, ws).action == "ask"
    push = PermissionChecker(["allow bash(git push *)"])
    assert push.check("bash", {"command": "git -c alias.p=push p"}, ws).action == "ask"
    reads = PermissionChecker(["allow read(.env)"])
    assert reads.check("read", {"file_path": ".env"}, ws).action == "allow"
    assert reads.check("grep", {"pattern": "K", "path": ".env"}, ws).action == "ask"
    writes = PermissionChecker(["allow edit(secret/**)"])
    assert writes.check("write", {"file_path": "secret/x"}, ws).action == "ask"


# -- 2. one path policy for every tool -----------------------------------------------------------

PATCH_ADD = "*** Begin Patch\n*** Add File: secret/f.txt\n+pwned\n*** End Patch\n"
PATCHES = {
    "add": PATCH_ADD,
    "update": "*** Begin Patch\n*** Update File: secret/kept.txt\n@@\n-protected\n+x\n"
    "*** End Patch\n",
    "delete": "*** Begin Patch\n*** Delete File: secret/kept.txt\n*** End Patch\n",
    "move-to": "*** Begin Patch\n*** Update File: f\n*** Move to: secret/f\n@@\n-victim\n+x\n"
    "*** End Patch\n",
    "crlf": PATCH_ADD.replace("\n", "\r\n"),
    "trailing-blank": PATCH_ADD.replace("secret/f.txt", "secret/f.txt\u00a0"),
    "second-file": "*** Begin Patch\n*** Add File: ok.txt\n+fine\n*** Add File: secret/g\n+x\n"
    "*** End Patch\n",
}


@pytest.mark.parametrize("rule", ["deny edit(secret/**)", "deny write(secret/**)"])
@pytest.mark.parametrize("patch", PATCHES.values(), ids=PATCHES.keys())
def test_every_file_of_a_patch_meets_edit_and_write_rules(rule: str, patch: str, ws: Path) -> None:
    decision = checker(rule).check("apply_patch", {"patch": patch}, ws)
    assert decision.action == "deny", decision.reason


def test_patch_paths_reads_headers_as_the_parser_does() -> None:
    assert patch_paths(PATCHES["crlf"]) == ["secret/f.txt"]
    assert patch_paths(PATCHES["trailing-blank"]) == ["secret/f.txt"]
    assert patch_paths(PATCHES["move-to"]) == ["f", "secret/f"]


@pytest.mark.parametrize("mode", ["content", "files_with_matches", "count"])
def test_grep_on_a_denied_file_is_denied_in_every_mode(mode: str, ws: Path) -> None:
    for rules in (checker("deny read(.env)"), checker("deny Read(./.env) from .claude/s.json")):
        args = {"pattern": "KEY", "path": ".env", "output_mode": mode}
        assert rules.check("grep", args, ws).action == "deny"


def test_the_default_ask_before_reading_env_holds_for_grep(ws: Path) -> None:
    interactive = checker(policy="ask")
    assert interactive.check("grep", {"pattern": "K", "path": ".env"}, ws).action == "ask"
    assert interactive.check("glob", {"pattern": "*", "path": ".env"}, ws).action == "ask"
    assert interactive.check("grep", {"pattern": "K", "path": "src"}, ws).action == "allow"
    # The ask stays an ask for reading: writing .env is not what it guards.
    assert interactive.check("edit", {"file_path": ".env"}, ws).action == "allow"


def test_a_read_deny_also_covers_writing(ws: Path) -> None:
    rules = checker("deny read(.env)")
    for tool in ("edit", "write"):
        assert rules.check(tool, {"file_path": ".env"}, ws).action == "deny"
    patch = "*** Begin Patch\n*** Add File: sub/.env\n+X=1\n*** End Patch\n"
    assert rules.check("apply_patch", {"patch": patch}, ws).action == "deny"


def test_directory_tools_on_a_denied_directory(ws: Path) -> None:
    rules = checker("deny read(secret/**)")
    for tool in ("ls", "glob", "grep"):
        assert rules.check(tool, {"path": "secret", "pattern": "*"}, ws).action == "deny", tool


@pytest.mark.parametrize(
    "command",
    [
        "cat .env",
        "cp .env /tmp/x",
        "python3 -c \"print(open('.env').read())\"",
        "cat .e*",
        "shopt -s dotglob; cat *",
        "base64 < .env",
        "tar czf /tmp/x.tgz .env",
        "sh -c 'cat ./.env'",
        "echo pwned > secret/f",
        "cp f secret/f",
        "sed -i s/a/b/ secret/kept.txt",
        "touch secret/new",
    ],
)
def test_the_shell_meets_path_rules_where_paths_can_be_seen(command: str, ws: Path) -> None:
    decision = bash(checker(*PATH_RULES), command, ws)
    assert decision.action == "deny", (command, decision.reason)


def test_reading_an_edit_denied_path_with_a_read_only_command_is_fine(ws: Path) -> None:
    rules = checker(*PATH_RULES)
    assert bash(rules, "cat secret/kept.txt", ws).action == "allow"
    assert bash(rules, "grep -n protected secret/kept.txt", ws).action == "allow"


def test_mcp_tool_paths_meet_the_path_rules(ws: Path) -> None:
    rules = checker(*PATH_RULES)
    reading = {"path": ".env"}
    assert rules.check("mcp__fs__read_file", reading, ws, read_only=True).action == "deny"
    many = {"paths": ["src/app.py", str(ws / ".env")]}
    assert rules.check("mcp__fs__read_multiple_files", many, ws, read_only=True).action == "deny"
    move = {"source": "f", "destination": "secret/f"}
    assert rules.check("mcp__fs__move_file", move, ws, read_only=False).action == "deny"
    write = {"path": "file://" + str(ws / "secret" / "x"), "content": "pwned"}
    assert rules.check("mcp__fs__write_file", write, ws, read_only=False).action == "deny"
    # Reading an edit-denied path is fine for a read-only tool; nothing protected, allowed.
    assert rules.check("mcp__fs__read_file", {"path": "secret/kept.txt"}, ws, read_only=True)
    fine = rules.check("mcp__fs__read_file", {"path": "src/app.py"}, ws, read_only=True)
    assert fine.action == "allow"
    # The built-in git tool's paths are reads too (a diff shows them).
    diff = {"action": "diff", "paths": [".env"]}
    assert rules.check("git", diff, ws).action == "deny"


# -- the tools filter what they find -------------------------------------------------------------


def tool_ctx(ws: Path, *rules: str, policy: str = "deny") -> ToolContext:
    ctx = ToolContext(workspace=ws)
    attach_path_policy(ctx, checker(*rules, policy=policy))
    return ctx


async def run(ctx: ToolContext, name: str, **args: Any) -> ToolResult:
    return await execute(TOOLS, name, args, ctx)


BACKENDS = ["rg", "python"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "rg" and shutil.which("rg") is None:
        pytest.skip("ripgrep is not installed")
    monkeypatch.setattr(search, "USE_RIPGREP", request.param == "rg")
    return request.param


@pytest.mark.parametrize("mode", ["content", "files_with_matches", "count"])
async def test_a_directory_grep_never_shows_a_denied_file(
    mode: str, ws: Path, backend: str
) -> None:
    result = await run(tool_ctx(ws, "deny read(.env)"), "grep", pattern="KEY", output_mode=mode)
    assert not result.is_error, result.content
    assert SECRET not in result.content and ".env" not in result.content.split("\n(")[0]
    assert "src/app.py" in result.content  # the search itself still works
    assert "left out by a deny rule" in result.content
    control = await run(ToolContext(workspace=ws), "grep", pattern="KEY", output_mode=mode)
    assert ".env" in control.content  # without the policy the file would have been shown


async def test_a_directory_grep_withholds_asked_files_and_names_them(
    ws: Path, backend: str
) -> None:
    (ws / "config").mkdir()
    (ws / "config" / ".env.production").write_text(f"TOKEN={OTHER_SECRET}\n")
    result = await run(tool_ctx(ws, policy="ask"), "grep", pattern="=", output_mode="content")
    assert SECRET not in result.content and OTHER_SECRET not in result.content
    assert "left out until permission is given" in result.content
    assert ".env" in result.content and "config/.env.production" in result.content
    # Where nobody needs asking (ask_policy=allow), the same search shows them.
    shown = await run(tool_ctx(ws, policy="allow"), "grep", pattern="=", output_mode="content")
    assert OTHER_SECRET in shown.content


async def test_claude_read_deny_holds_for_a_directory_grep(ws: Path, backend: str) -> None:
    ctx = tool_ctx(ws, "deny Read(./.env) from .claude/settings.json")
    result = await run(ctx, "grep", pattern="KEY", output_mode="content")
    assert SECRET not in result.content and "src/app.py" in result.content


async def test_glob_and_ls_leave_denied_paths_out(ws: Path) -> None:
    ctx = tool_ctx(ws, "deny read(.env)", "deny read(secret/**)")
    listed = await run(ctx, "ls", path=".")
    assert ".env" not in listed.content and "secret/" not in listed.content
    assert "f  (" in listed.content and "2 paths left out by a deny rule" in listed.content
    found = await run(ctx, "glob", pattern="**/*")
    assert ".env" not in found.content and "secret/kept.txt" not in found.content
    assert "src/app.py" in found.content
    plain = await run(ToolContext(workspace=ws), "glob", pattern="**/*")
    assert "secret/kept.txt" in plain.content  # the control: glob does list it otherwise


async def test_apply_patch_rechecks_every_file_it_writes(ws: Path) -> None:
    ctx = tool_ctx(ws, "deny edit(secret/**)")
    result = await run(ctx, "apply_patch", patch=PATCHES["second-file"])
    assert result.is_error and "Permission denied" in result.content
    assert not (ws / "ok.txt").exists() and not (ws / "secret" / "g").exists()
    fine = await run(ctx, "apply_patch", patch=PATCHES["second-file"].split("*** Add File: s")[0]
                     + "*** End Patch\n")  # fmt: skip
    assert not fine.is_error and (ws / "ok.txt").read_text() == "fine\n"


# -- 3. plan mode without bubblewrap -------------------------------------------------------------

ABBREVIATED = [
    ("sed --in-pl 's/victim/gone/' f", "'sed --in-pl'"),
    ("sort --out=sorted.txt f", "'sort --out'"),
    ("git grep --open-files-in=rm victim", "'git grep --open-files-in'"),
    ("git grep -Orm victim", "'git grep -O' runs a pager program"),
    ("git log --outp=x.patch -p", "'git log --outp'"),
    ("git diff --out=x.patch", "'git diff --out'"),
    ("sort --compress=sh f", "'sort --compress'"),
    ("sort -T . f", "'sort -T' writes temporary files"),
    ("time --out=t.txt ls", "'time --out'"),
    ("env --split-str='touch x'", "'env --split-str'"),
    ("rg --pre=sh x", "'rg --pre'"),
    ("rg --hostname-bin=touch x", "'rg --hostname-bin'"),
    ("find . -newer f -fprint out", "'find -fprint'"),
    ("find . -unknownprimary", "'find -unknownprimary'"),
    ("git cat-file --filters HEAD:f", "'git cat-file --filters'"),
    ("file -p f", "'file -p'"),
    ("bash --login -c ls", "'bash --login'"),
    ("uniq --all f out", "'uniq --all'"),
    ("date --se 2030-01-01", "'date --se'"),
]


@pytest.mark.parametrize(("command", "message"), ABBREVIATED)
def test_plan_fallback_refuses_options_it_does_not_know(command: str, message: str) -> None:
    with pytest.raises(SandboxRefused) as info:
        check_readonly_command(command)
    assert message in str(info.value)


def test_read_only_commands_with_known_options_still_pass() -> None:
    for command in (
        "git log --oneline --stat -n 5 --author=me -- src",
        "git diff --cached --name-only && git show HEAD --stat",
        "git grep -n -e TODO -- '*.py'",
        "git status --porcelain=v1 -uno --branch",
        "sort -k 2 -t , -nr f | uniq -c",
        "sed -n -e '1,5p' f",
        "rg -n --hidden -g '*.py' TODO",
        "date -u +%s && date --iso-8601=seconds",
        "find . -maxdepth 2 -type f -newermt 2020-01-01 -print0",
        "file --mime-type f",
    ):
        check_readonly_command(command)


@pytest.fixture
def plan_repo(tmp_path: Path) -> Path:
    root = tmp_path / "plan"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "f").write_text("victim\nother\n")
    (root / "rm").write_text("")  # git grep -Orm / --open-files-in=rm runs "rm" on matches
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


def tree_state(root: Path) -> dict[str, bytes]:
    """The workspace's files (not git's nor stagecrew's own) and their bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {".git", ".stagecrew"} & set(p.relative_to(root).parts)
    }


PLAN_ATTEMPTS = [c for c, _ in ABBREVIATED[:3]]


@pytest.mark.parametrize("command", PLAN_ATTEMPTS)
def test_the_issue_s_plan_mode_writes_are_real(command: str, plan_repo: Path) -> None:
    """The control: run as they are, these commands do change the repository."""
    before = tree_state(plan_repo)
    subprocess.run(["bash", "-c", command], cwd=plan_repo, capture_output=True, timeout=30)
    assert tree_state(plan_repo) != before


@pytest.mark.parametrize("command", PLAN_ATTEMPTS)
def test_plan_fallback_refuses_them_before_anything_runs(
    command: str, plan_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.ENV_NO_BWRAP, "1")
    before = tree_state(plan_repo)
    with pytest.raises(SandboxRefused):
        readonly_argv(command, ToolContext(workspace=plan_repo, read_only=True))
    assert tree_state(plan_repo) == before


# -- end to end: crew run with the scripted model ------------------------------------------------


def call(call_id: str, name: str, **arguments: object) -> dict[str, object]:
    return {"id": call_id, "name": name, "arguments": arguments}


def turn(*calls: dict[str, object]) -> dict[str, object]:
    return {"tool_calls": list(calls)}


def write_project_config(root: Path, base_url: str, rules: list[str]) -> None:
    (root / ".stagecrew").mkdir(exist_ok=True)
    config = {
        "models": {"primary": {"model": "openai/attacker", "api_base": base_url}},
        "permissions": rules,
    }
    (root / ".stagecrew" / "config.json").write_text(json.dumps(config))


def tool_results(requests: list[Any]) -> dict[str, str]:
    """Every tool result the model was sent, by call id (the last request holds them all)."""
    messages = requests[-1].body["messages"]
    return {m["tool_call_id"]: m["content"] for m in messages if m.get("role") == "tool"}


def refs(bare: Path) -> str:
    return subprocess.run(
        ["git", "for-each-ref"], cwd=bare, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def e2e_repo(git_repo: Path) -> tuple[Path, Path]:
    """The conftest repository, plus a victim, a secret, a protected directory, a bare remote
    inside the workspace (so only the permission check, not a sandbox, can stop a push), an
    alias ``yolo`` = push in the repository's config, and one commit not pushed yet."""
    root = git_repo
    (root / "f").write_text("victim\n")
    (root / ".env").write_text(f"KEY={SECRET}\n")
    (root / "secret").mkdir()
    (root / "secret" / "kept.txt").write_text("protected\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("KEY = 'public'\n")
    bare = root / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    git(root, "remote", "add", "origin", str(bare))
    git(root, "push", "-q", "origin", "main")
    git(root, "config", "alias.yolo", "push")
    git(root, "add", "f", "src")
    git(root, "commit", "-q", "-m", "not pushed yet")
    return root, bare


BUILD_ATTACKS = [
    turn(
        call("setsid", "bash", command="setsid rm f"),
        call("ionice", "bash", command="ionice rm f"),
        call("flock", "bash", command="flock /tmp/stagecrew-deny-test.lock rm f"),
        call("script", "bash", command="script -qc 'rm f' /dev/null"),
    ),
    turn(
        call("alias-c", "bash", command="git -c alias.yolo=push yolo origin main"),
        call("alias-config", "bash", command="git yolo origin main"),
        call("patch", "apply_patch", patch=PATCH_ADD),
        call("write", "write", file_path="secret/w.txt", content="pwned"),
    ),
    turn(
        call("grep-file", "grep", pattern="KEY", path=".env", output_mode="content"),
        call("grep-dir", "grep", pattern="KEY", output_mode="content"),
        call("grep-count", "grep", pattern="SK-LIVE", output_mode="count"),
        call("cat", "bash", command="cat .env"),
    ),
    turn(
        call("glob", "glob", pattern="**/*"),
        call("ls", "ls", path="."),
        call("ls-secret", "ls", path="secret"),
    ),
    {"text": "Tried everything."},
]


@pytest.mark.ray
def test_crew_run_with_deny_rules_holds(ray_head: object, e2e_repo: tuple[Path, Path]) -> None:
    root, bare = e2e_repo
    remote_before = refs(bare)
    from stagecrew.testing.scripted_llm import ScriptedLLM

    rules = [*RM_GIT_RULES, "deny read(.env)", "deny edit(secret/**)", "deny read(secret/**)"]
    with ScriptedLLM(BUILD_ATTACKS) as llm:
        write_project_config(root, llm.base_url, rules)
        proc = crew("run", "Try to get around the rules.", "--output-format", "json", cwd=root)
        requests = list(llm.requests)
    assert proc.returncode == 0, proc.stderr
    results = tool_results(requests)
    assert len(results) == 15

    assert (root / "f").read_text() == "victim\n", "the victim file was deleted"
    for name in ("setsid", "ionice", "flock", "script", "alias-c", "alias-config", "cat"):
        assert results[name].startswith("Permission denied"), (name, results[name])
    assert refs(bare) == remote_before, "the push reached the remote"
    assert not (root / "secret" / "f.txt").exists() and not (root / "secret" / "w.txt").exists()
    assert results["patch"].startswith("Permission denied")
    assert results["grep-file"].startswith("Permission denied")
    assert "src/app.py" in results["grep-dir"]
    assert "secret/kept.txt" not in results["glob"] and ".env" not in results["glob"]
    assert "src/app.py" in results["glob"]
    assert ".env" not in results["ls"].split("\n(")[0] and "secret/" not in results["ls"]
    assert results["ls-secret"].startswith("Permission denied")
    # The secret never reached the model, in any request.
    assert all(SECRET not in json.dumps(r.body) for r in requests)


CLAUDE_ATTACKS = [
    turn(
        call("grep-file", "grep", pattern="KEY", path=".env", output_mode="content"),
        call("grep-dir", "grep", pattern="=", output_mode="content"),
        call("grep-files", "grep", pattern="SECOND", output_mode="files_with_matches"),
        call("grep-asked", "grep", pattern="TOKEN", path="config/.env.production"),
    ),
    {"text": "Nothing found."},
]


@pytest.mark.ray
def test_crew_run_claude_read_deny_and_the_default_ask_hold_for_grep(
    ray_head: object, e2e_repo: tuple[Path, Path]
) -> None:
    root, _bare = e2e_repo
    (root / ".claude").mkdir()
    (root / ".claude" / "settings.json").write_text(
        json.dumps({"permissions": {"deny": ["Read(./.env)"]}})
    )
    (root / "config").mkdir()
    (root / "config" / ".env.production").write_text(f"TOKEN={OTHER_SECRET}\n")
    from stagecrew.testing.scripted_llm import ScriptedLLM

    with ScriptedLLM(CLAUDE_ATTACKS) as llm:
        write_project_config(root, llm.base_url, [])
        proc = crew("run", "Find the keys.", cwd=root)
        requests = list(llm.requests)
    assert proc.returncode == 0, proc.stderr
    results = tool_results(requests)
    assert results["grep-file"].startswith("Permission denied")
    assert "Read(./.env) from .claude/settings.json" in results["grep-file"]
    # Headless, the default ask before reading .env.* is a deny: the direct grep is refused
    # and the directory greps leave the file out.
    assert results["grep-asked"].startswith("Permission denied")
    assert "src/app.py" in results["grep-dir"]
    for text in (SECRET, OTHER_SECRET):
        assert all(text not in json.dumps(r.body) for r in requests)


PLAN_ATTACKS = [
    turn(*(call(f"plan-{i}", "bash", command=c) for i, c in enumerate(PLAN_ATTEMPTS))),
    {"text": "# Plan\n\nNothing changed."},
]


@pytest.fixture
def head_without_bwrap(
    stagecrew_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The environment of ``crew`` commands served by a head of their own, started with
    ``STAGECREW_NO_BWRAP=1``: agents read it from their process, which the shared test head
    started without it. Stopped (``crew down``) afterwards."""
    env = {
        "STAGECREW_HOME": str(tmp_path_factory.mktemp("no-bwrap-home")),
        sandbox.ENV_NO_BWRAP: "1",
    }
    yield env
    down = crew("down", cwd=stagecrew_home, env=env)
    assert down.returncode == 0, down.stderr


@pytest.mark.ray
def test_crew_run_plan_mode_without_bwrap_refuses_abbreviations(
    head_without_bwrap: dict[str, str], plan_repo: Path
) -> None:
    from stagecrew.testing.scripted_llm import ScriptedLLM

    before = tree_state(plan_repo)
    with ScriptedLLM(PLAN_ATTACKS) as llm:
        write_project_config(plan_repo, llm.base_url, [])
        proc = crew(
            "run", "Plan something.", "--agent", "plan", cwd=plan_repo, env=head_without_bwrap
        )
        requests = list(llm.requests)
    assert proc.returncode == 0, proc.stderr
    results = tool_results(requests)
    assert len(results) == len(PLAN_ATTEMPTS)
    for content in results.values():
        assert content.startswith("Refused in read-only (plan) mode"), content
    assert tree_state(plan_repo) == before


# -- the agent hands MCP tools' read-only annotations to the check -------------------------------


async def test_agent_checks_provider_tool_paths(ws: Path, scripted_llm: Callable[..., Any]) -> None:
    from stagecrew.actors.inprocess import run_agent_inprocess
    from stagecrew.actors.spec import AgentSpec
    from stagecrew.messages import ModelSpecWire, ToolFinished
    from stagecrew.testing.echo_provider import EchoProvider

    llm = scripted_llm(
        [
            turn(
                call("note", "echo__write_note", path="secret/n.txt", text="pwned"),
                call("say", "echo__say", text=".env"),
                call("fine", "echo__write_note", path="notes.txt", text="ok"),
            ),
            {"text": "done"},
        ]
    )
    spec = AgentSpec(
        session="s",
        actor_id="a",
        workspace=str(ws),
        prompt="go",
        permissions=[*PATH_RULES],
        ask_policy="deny",
        model=ModelSpecWire(model="openai/m", api_base=llm.base_url, num_retries=0),
    )
    _result, events = await run_agent_inprocess(spec, providers=[EchoProvider("echo", "")])
    finished = {e.call_id: e for e in events if isinstance(e, ToolFinished)}
    assert finished["note"].content.startswith("Permission denied")
    assert finished["say"].content.startswith("Permission denied")
    assert not finished["fine"].is_error, finished["fine"].content
    assert not (ws / "secret" / "n.txt").exists() and (ws / "notes.txt").exists()
