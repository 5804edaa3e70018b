"""Verification commands run for real, in both the bwrap and the throw-away-copy mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from stagecrew.judge import verify
from stagecrew.judge.verify import run_verification, run_verification_async

PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"


@pytest.fixture(params=["bwrap", "copy"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "copy":
        monkeypatch.setenv("STAGECREW_NO_BWRAP", "1")
    else:
        monkeypatch.delenv("STAGECREW_NO_BWRAP", raising=False)
        if not verify.bwrap_available():
            pytest.skip("bwrap cannot run here")
    return request.param


def fingerprint(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under root with its mode, mtime and content: any write shows up here."""
    out: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            data = full.read_bytes() if full.is_file() and not full.is_symlink() else b""
            out[str(full.relative_to(root))] = (st.st_mode, st.st_mtime_ns, data)
    return out


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny real project in a real git repo, with one test that passes."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (ws / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "init"],
        cwd=ws,
        check=True,
    )
    return ws


def test_writes_never_reach_the_workspace(project: Path, mode: str) -> None:
    before = fingerprint(project)
    results = run_verification(
        [
            "touch x",
            "echo > f",
            "echo overwritten > calc.py",
            "rm -f test_calc.py",
            "mkdir newdir",
            "git add -A && git -c user.name=a -c user.email=a@b commit -qm sneaky",
            "git status --porcelain",
        ],
        project,
        timeout_s=20,
    )
    assert [r.mode for r in results] == [mode] * 7
    assert fingerprint(project) == before
    if mode == "bwrap":
        # Read-only means the writes fail, visibly.
        assert not results[0].passed and "Read-only file system" in results[0].output
        assert not results[1].passed
    else:
        # In the copy they succeed, but only in the copy.
        assert results[0].passed and results[1].passed


def test_pytest_pass_and_fail(project: Path, mode: str) -> None:
    [ok] = run_verification([PYTEST], project, timeout_s=60)
    assert ok.passed and ok.exit_code == 0 and not ok.timed_out
    assert "1 passed" in ok.output

    (project / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    before = fingerprint(project)
    [bad] = run_verification([PYTEST], project, timeout_s=60)
    assert not bad.passed and bad.exit_code == 1
    assert "1 failed" in bad.output and "assert -1 == 5" in bad.output
    assert fingerprint(project) == before, "no __pycache__, no .pytest_cache"
    assert "`" in bad.summary() and "FAILED (exit 1)" in bad.summary()


def test_timeout_kills_the_whole_tree(project: Path, mode: str) -> None:
    start = time.monotonic()
    [res] = run_verification(["sleep 30 & echo child=$!; sleep 30"], project, timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert res.timed_out and not res.passed and res.exit_code is None
    assert elapsed < 10
    assert "timed out after 1s" in res.output
    if mode == "copy":
        # Same PID namespace: the background child must be gone, not orphaned.
        child = int(res.output.split("child=")[1].split()[0])
        time.sleep(0.2)
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


def test_every_command_runs_and_output_is_capped(project: Path, mode: str) -> None:
    results = run_verification(
        ["exit 3", "seq 1 200000", "echo to-stderr >&2; true"],
        project,
        timeout_s=20,
        max_output_chars=500,
    )
    assert [r.exit_code for r in results] == [3, 0, 0]
    big = results[1]
    assert big.output_truncated and big.output.endswith("200000\n")
    assert len(big.output) < 700
    assert "to-stderr" in results[2].output


def test_copy_mode_cleans_up_its_scratch(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STAGECREW_NO_BWRAP", "1")
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch_root))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    [res] = run_verification(["pwd; touch made-in-copy"], project, timeout_s=20)
    assert res.passed and str(project) not in res.output
    assert list(scratch_root.iterdir()) == []


async def test_async_cancel_kills_running_command(project: Path, mode: str) -> None:
    task = asyncio.create_task(
        run_verification_async(["sleep 29.71", "echo never"], project, timeout_s=60)
    )
    await asyncio.sleep(0.5)
    task.cancel()
    start = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    # No leftover of the (uniquely spelled) sleep we started.
    await asyncio.sleep(0.3)
    mine = [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if p.info["cmdline"] == ["sleep", "29.71"] and p.info["status"] != "zombie"
    ]
    assert mine == []
    assert time.monotonic() - start < 5


def test_no_commands_and_missing_workspace(tmp_path: Path) -> None:
    assert run_verification([], tmp_path, timeout_s=1) == []
    with pytest.raises(NotADirectoryError):
        run_verification(["true"], tmp_path / "nope", timeout_s=1)


def test_git_works_in_a_worktree_under_tmp(project: Path, tmp_path: Path, mode: str) -> None:
    """A worktree's .git points into the main repo; the sandbox must still let git find it."""
    wt = tmp_path / "elsewhere" / "wt"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(wt)], cwd=project, check=True)
    (wt / "calc.py").write_text("def add(a, b):\n    return b + a\n")
    admin = project / ".git"
    before = fingerprint(admin)
    [res] = run_verification(["git status --porcelain && git log --oneline -1"], wt, timeout_s=20)
    assert res.passed, res.output
    assert "M calc.py" in res.output and "init" in res.output
    assert fingerprint(admin) == before, "not even the worktree's index is refreshed"


def test_fifo_in_workspace_does_not_hang_the_copy(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGECREW_NO_BWRAP", "1")
    os.mkfifo(project / "pipe")
    [res] = run_verification(["ls"], project, timeout_s=10)
    assert res.passed and "calc.py" in res.output
