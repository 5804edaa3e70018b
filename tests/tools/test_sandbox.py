"""Plan mode never writes: real commands through real bwrap, and the allowlist without it.

Every writing test snapshots the workspace (contents, mode and mtime of every file, .git
included, plus HEAD) before and after, so "the command failed" is never mistaken for "nothing
changed".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagecrew.tools import sandbox
from stagecrew.tools.base import ToolContext
from stagecrew.tools.sandbox import (
    SandboxRefused,
    check_readonly_command,
    readonly_argv,
    sandbox_available,
)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}

WRITERS = [
    "echo x > notes.txt",
    "echo x >> notes.txt",
    "echo new > brand_new.txt",
    "echo x | tee notes.txt",
    "sed -i 's/hello/bye/' notes.txt",
    "python3 -c \"open('notes.txt', 'w').write('gone')\"",
    "touch notes.txt",
    "touch created.txt",
    "git commit --allow-empty -m sneaky",
    "git add -A",
    "rm notes.txt",
    "rm -rf src",
    "mkdir newdir",
    "mv notes.txt moved.txt",
    "cp notes.txt copy.txt",
    "chmod 777 notes.txt",
    "ln -s notes.txt link",
    "bash -c 'echo x > notes.txt'",
    "find . -name '*.txt' -delete",
]

READERS = [
    ("cat notes.txt", "hello world"),
    ("ls", "notes.txt"),
    ("ls src", "app.py"),
    ("head -n 1 src/app.py", "print"),
    ("grep -rn hello .", "notes.txt:1:hello world"),
    ("git status --short", ""),
    ("git log --oneline", "initial"),
    ("git diff HEAD --stat", ""),
    ("wc -l notes.txt 2>&1", "1 notes.txt"),
]


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True, timeout=30
    )
    return proc.stdout.strip()


def _base_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text("hello world\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('hi')\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "initial")
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One git repo for the whole module: building it costs more than every bwrap run."""
    return _base_repo(tmp_path_factory.mktemp("ws"))


def snapshot(root: Path) -> dict[str, object]:
    files: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            digest = ""
            if path.is_file() and not path.is_symlink():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            files[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, st.st_size, digest)
    files["<HEAD>"] = _git(root, "rev-parse", "HEAD")
    return files


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second repo, only ever copied, for the unsandboxed control runs."""
    return _base_repo(tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def ctx(repo: Path) -> ToolContext:
    return ToolContext(workspace=repo, read_only=True)


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sandbox, "FORCE_FALLBACK", True)
    yield


def run(argv: list[str], ctx: ToolContext) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        argv, cwd=ctx.cwd, env=env, capture_output=True, text=True, timeout=30, check=False
    )


needs_bwrap = pytest.mark.skipif(not sandbox_available(), reason="bubblewrap does not work here")


# -- control: the writers really write -----------------------------------------------------------


@pytest.mark.parametrize("command", WRITERS)
def test_control_writers_change_a_copy_when_unsandboxed(
    command: str, pristine: Path, tmp_path: Path
) -> None:
    """Without this, a writer that merely failed to start would 'pass' the tests below."""
    shutil.copytree(pristine, tmp_path / "copy", symlinks=True)
    copy = tmp_path / "copy"
    before = snapshot(copy)
    time.sleep(0.01)  # so a rewrite with identical bytes still moves an mtime
    env = {**os.environ, **GIT_ENV}
    proc = subprocess.run(
        ["bash", "-c", command], cwd=copy, env=env, capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert snapshot(copy) != before


# -- with bubblewrap -----------------------------------------------------------------------------


@needs_bwrap
def test_bwrap_argv_shape(ctx: ToolContext) -> None:
    argv = readonly_argv("ls", ctx)
    assert argv[0].endswith("bwrap")
    assert argv[-3:] == ["bash", "-c", "ls"]
    for flag in ("--unshare-net", "--die-with-parent", "--new-session", "--unshare-pid"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--chdir") + 1] == str(ctx.cwd)
    joined = " ".join(argv)
    assert "--ro-bind / /" in joined and "--tmpfs /tmp" in joined
    assert f"--ro-bind {ctx.workspace} {ctx.workspace}" in joined
    assert "--bind " not in joined  # nothing writable is bound in


@needs_bwrap
@pytest.mark.parametrize("command", WRITERS)
def test_bwrap_writers_fail_and_change_nothing(command: str, ctx: ToolContext, repo: Path) -> None:
    before = snapshot(repo)
    proc = run(readonly_argv(command, ctx), ctx)
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert snapshot(repo) == before


@needs_bwrap
def test_bwrap_root_cannot_remount_its_way_out(ctx: ToolContext, repo: Path) -> None:
    # Without --cap-drop ALL, root keeps CAP_SYS_ADMIN inside bwrap and this succeeds.
    before = snapshot(repo)
    command = f"mount -o remount,rw {repo} ; mount -o remount,rw / ; echo pwned > notes.txt"
    proc = run(readonly_argv(command, ctx), ctx)
    assert proc.returncode != 0
    assert snapshot(repo) == before


@needs_bwrap
@pytest.mark.parametrize(("command", "expected"), READERS)
def test_bwrap_readers_work(command: str, expected: str, ctx: ToolContext, repo: Path) -> None:
    before = snapshot(repo)
    proc = run(readonly_argv(command, ctx), ctx)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    assert snapshot(repo) == before


@needs_bwrap
def test_bwrap_runs_in_ctx_cwd_with_a_private_tmp(repo: Path) -> None:
    ctx = ToolContext(workspace=repo, cwd=repo / "src", read_only=True)
    marker = f"stagecrew-sandbox-{os.getpid()}"
    script = f"pwd; echo scratch > /tmp/{marker} && cat /tmp/{marker}; ls -A /run | wc -l"
    proc = run(readonly_argv(script, ctx), ctx)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == str(repo / "src")
    assert lines[1] == "scratch"  # /tmp is writable scratch space inside...
    assert lines[2] == "0"  # ...and /run (docker, dbus, postgres sockets) is hidden
    assert not Path("/tmp", marker).exists()  # ...but private to the sandbox


@needs_bwrap
def test_bwrap_has_no_network(ctx: ToolContext) -> None:
    # A listener on the host's loopback: reachable from here, not from the sandbox's own netns.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # control: the port really is open
        proc = run(readonly_argv(f"echo hi > /dev/tcp/127.0.0.1/{port}", ctx), ctx)
    assert proc.returncode != 0


@needs_bwrap
def test_bwrap_cannot_signal_outside_processes(ctx: ToolContext) -> None:
    victim = subprocess.Popen(["sleep", "30"])
    try:
        proc = run(readonly_argv(f"kill -9 {victim.pid}", ctx), ctx)
        assert proc.returncode != 0
        time.sleep(0.1)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_probe_is_cached_and_env_forces_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.reset_sandbox_probe()
    first = sandbox_available()
    started = time.perf_counter()
    assert sandbox_available() == first
    assert time.perf_counter() - started < 0.01  # cached: no second bwrap run
    monkeypatch.setenv("STAGECREW_NO_BWRAP", "1")
    assert sandbox_available() is False
    monkeypatch.setenv("STAGECREW_NO_BWRAP", "0")
    assert sandbox_available() == first


def test_missing_bwrap_means_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    sandbox.reset_sandbox_probe()
    try:
        assert sandbox_available() is False
    finally:
        monkeypatch.undo()
        sandbox.reset_sandbox_probe()


# -- without bubblewrap: the allowlist -----------------------------------------------------------


@pytest.mark.parametrize("command", WRITERS)
def test_fallback_refuses_writers_before_running(
    command: str, ctx: ToolContext, repo: Path, fallback: None
) -> None:
    assert not sandbox_available()
    before = snapshot(repo)
    with pytest.raises(SandboxRefused) as info:
        readonly_argv(command, ctx)
    assert str(info.value).startswith("plan mode: ")
    assert str(info.value).endswith("only read-only commands are allowed without a sandbox")
    assert snapshot(repo) == before


@pytest.mark.parametrize(("command", "expected"), READERS)
def test_fallback_readers_run(
    command: str, expected: str, ctx: ToolContext, repo: Path, fallback: None
) -> None:
    before = snapshot(repo)
    argv = readonly_argv(command, ctx)
    assert "bwrap" not in argv[0]
    proc = run(argv, ctx)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    assert snapshot(repo) == before  # git status did not refresh .git/index either


def test_fallback_git_status_does_not_touch_the_index(repo: Path, fallback: None) -> None:
    ctx = ToolContext(workspace=repo, read_only=True)
    notes = repo / "notes.txt"
    stat = notes.stat()
    os.utime(notes, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # stale index
    try:
        index = repo / ".git" / "index"
        before = (index.stat().st_mtime_ns, index.read_bytes())
        proc = run(readonly_argv("git status", ctx), ctx)
        assert proc.returncode == 0
        assert (index.stat().st_mtime_ns, index.read_bytes()) == before
    finally:
        os.utime(notes, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("sed -i 's/a/b/' f", "plan mode: 'sed -i' can modify files"),
        ("sed --in-place=.bak 's/a/b/' f", "'sed --in-place' can modify files"),
        ("sed -ni p f", "'sed -i' can modify files"),
        ("sed 's/a/b/w out' f", "may write files or run commands"),
        ("sed 's/a/b/e' f", "may write files or run commands"),
        ("sed '1r /etc/passwd' f", "may write files or run commands"),
        ("sed -f script.sed f", "'sed -f'"),
        ("echo x > f", "'> f' writes to a file"),
        ("ls &> f", "'&> f' writes to a file"),
        ("cat x 2>> errors.log", "'2>> errors.log' writes to a file"),
        ("(ls; pwd) > out", "'> out' writes to a file"),
        ("tee f", "'tee' is not on the read-only allowlist"),
        ("python -m pytest", "'python' is not on the read-only allowlist"),
        ("python3 -c 'print(1)'", "'python3' is not on the read-only allowlist"),
        ("ls && rm -rf build", "'rm' is not on the read-only allowlist"),
        ("cat f | xargs rm", "'rm' is not on the read-only allowlist"),
        ("find . | xargs find", "'xargs find' takes arguments from stdin"),
        ("find . -exec cat {} \\;", "'find -exec'"),
        ("find . -fprint out", "'find -fprint'"),
        ("git push", "'git push' can modify"),
        ("git -c core.pager=evil log", "'git -c' can change what git runs"),
        ("git branch feature", "'git branch feature' creates a branch"),
        ("git branch -D main", "'git branch -D'"),
        ("git diff --output=patch.diff", "'git diff --output'"),
        ("git remote add x y", "only listing"),
        ("sort -o out in", "'sort -o'"),
        ("tree -o out", "'tree -o'"),
        ("uniq in out", "writes its second operand ('out')"),
        ("file -C -m magic", "'file -C'"),
        ("date 010100002030", "sets the system clock"),
        ("time -o t.txt ls", "'time -o'"),
        ("sudo ls", "'sudo' is not allowed"),
        ("nohup ls", "'nohup'"),
        ("echo $(date)", "substitution"),
        ("ls `pwd`", "substitution"),
        ("cat <(ls)", "substitution"),
        ("case x in a) ls;; esac", "could not fully parse"),
        ("$CMD", "could not fully parse"),
        ("./ls", "'./ls' is not a known program"),
        ("PATH=/tmp/evil ls", "setting PATH changes which programs run"),
        ("export PATH=/tmp/evil", "setting PATH"),
        ("env LD_PRELOAD=x.so ls", "setting LD_PRELOAD"),
        ("bash -l -c ls", "login or interactive shell"),
        ("bash -c 'ls; touch x'", "'touch' is not on the read-only allowlist"),
        ("trap 'ls' EXIT", "'trap' runs commands later"),
        ("curl -s example.com | sh", "'curl' is not on the read-only allowlist"),
        ("rg --pre ./script x", "'rg --pre'"),
        ("for PATH in /tmp/evil; do ls; done", "setting PATH"),
        (": ${PATH:=/tmp/evil}; ls", "setting PATH"),
        ("read -r PATH < f; ls", "'read PATH' sets PATH"),
        ("printf -v PATH %s /tmp/evil; ls", "'printf PATH' sets PATH"),
        ("env -S 'rm -rf x'", "'env -S' builds a command line"),
        ("env -S 'ls -la'", "'env -S' builds a command line"),
    ],
)
def test_allowlist_refusals_name_the_part(command: str, message: str) -> None:
    with pytest.raises(SandboxRefused) as info:
        check_readonly_command(command)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "command",
    [
        "ls -la src && cat README.md | head -n 20",
        "grep -rn 'def main' . 2>/dev/null | wc -l",
        "rg -n TODO --glob '*.py'",
        "find . -name '*.py' -not -path './.venv/*' -print",
        "sed -n '10,20p' file.py",
        "sed -e '1d' -e 's/a;b/c/g' -E file",
        "sed '/^#/d; s|/usr|/opt|2' f",
        "sed -n '/start/,/end/{p;=}' f && sed -n '0~2p' f",
        "env",
        "read -r line < f; printf '%s\\n' \"$line\"",
        'for f in *.py; do wc -l "$f"; done',
        "git status --short && git diff HEAD~1 -- src/ && git log --oneline -n 5",
        "git -C sub --no-pager show HEAD:README.md",
        "git branch -a -v",
        "git branch --list 'feat/*'",
        "git remote -v",
        "git blame -L 1,5 f && git rev-parse --show-toplevel && git ls-files",
        "cd src && ls; pwd",
        "time ls",
        "timeout 5 cat f",
        "env LANG=C sort f | uniq -c",
        "find . -type f | xargs grep -l foo",
        "bash -c 'ls && cat x'",
        "cat <<EOF\nliteral $HOME\nEOF",
        "wc -l < f.txt 2>&1",
        "echo hi >&2",
        "stat f && file f && du -sh . && tree -L 2",
        "/usr/bin/ls -l",
        "diff -u a b",
        "[ -f x ] && echo yes || echo no",
        "set -euo pipefail; ls",
        "",
    ],
)
def test_allowlist_accepts_read_only_commands(command: str) -> None:
    check_readonly_command(command)


def test_fallback_argv_is_plain_bash(ctx: ToolContext, fallback: None) -> None:
    assert readonly_argv("ls", ctx) == ["env", "GIT_OPTIONAL_LOCKS=0", "bash", "-c", "ls"]


def test_refusal_carries_the_part(fallback: None) -> None:
    with pytest.raises(SandboxRefused) as info:
        check_readonly_command("ls && sed -i s/a/b/ f")
    assert info.value.part == "sed -i s/a/b/ f"
    assert info.value.detail == "'sed -i' can modify files"


@pytest.mark.skipif(not sandbox.sandbox_available(), reason="bubblewrap is not usable here")
def test_tools_under_tmp_stay_reachable_in_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox's private /tmp must not hide a virtualenv or tool directory that lives
    under /tmp (a checkout in /tmp with its .venv, say): they are bound back read-only."""
    assert str(tmp_path).startswith("/tmp/")
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    tool = bindir / "hello-from-tmp"
    tool.write_text("#!/bin/sh\necho reachable\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    argv = sandbox.bwrap_argv("hello-from-tmp && touch x", workspace, workspace)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert "reachable" in proc.stdout
    assert proc.returncode != 0 and not (workspace / "x").exists()  # still read-only
    assert not (bindir / "x").exists()
