"""Snapshots against real git repositories: the person's index and HEAD must never move."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from stagecrew.tools.snapshots import (
    SNAPSHOT_REF_PREFIX,
    capture_tree,
    diff_since,
    list_snapshots,
    prune_snapshots,
    restore,
    snapshot,
)

BINARY = bytes(range(256)) * 4


def run_git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def make_repo(path: Path, *, commit: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    run_git(path, "init", "-q", "-b", "main")
    run_git(path, "config", "user.name", "Test Person")
    run_git(path, "config", "user.email", "person@example.com")
    (path / ".gitignore").write_text("*.log\nbuild/\n")
    (path / "a.txt").write_text("alpha\n")
    (path / "keep.txt").write_text("never touched\n")
    (path / "sub").mkdir()
    (path / "sub" / "b.txt").write_text("bravo\n")
    (path / "blob.bin").write_bytes(BINARY)
    (path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    if commit:
        run_git(path, "add", "-A")
        run_git(path, "commit", "-q", "-m", "initial")
    return path


def state(repo: Path) -> dict[str, bytes]:
    """Every file under the repo except .git, with its bytes: the person's view of the tree."""
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            full = Path(dirpath) / name
            files[str(full.relative_to(repo))] = full.read_bytes()
    return files


def index_bytes(repo: Path) -> bytes:
    index = repo / ".git" / "index"
    return index.read_bytes() if index.exists() else b""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def test_snapshot_leaves_index_head_and_status_alone(repo: Path) -> None:
    (repo / "a.txt").write_text("alpha staged\n")
    run_git(repo, "add", "a.txt")
    (repo / "a.txt").write_text("alpha staged then edited\n")
    (repo / "untracked.txt").write_text("new\n")
    head = run_git(repo, "rev-parse", "HEAD")
    index = index_bytes(repo)
    status = run_git(repo, "status", "--porcelain")
    reflog = run_git(repo, "reflog")

    snap_id = snapshot(repo, "before\nthe agent")

    assert run_git(repo, "rev-parse", "HEAD") == head
    assert index_bytes(repo) == index
    assert run_git(repo, "status", "--porcelain") == status
    assert run_git(repo, "reflog") == reflog
    ref = SNAPSHOT_REF_PREFIX + snap_id
    commit = run_git(repo, "rev-parse", ref).strip()
    assert run_git(repo, "rev-parse", f"{commit}^").strip() == head.strip()
    # The snapshot holds the working-tree content (not the staged one) and the untracked file.
    assert run_git(repo, "show", f"{commit}:a.txt") == "alpha staged then edited\n"
    assert run_git(repo, "show", f"{commit}:untracked.txt") == "new\n"

    snaps = list_snapshots(repo)
    assert [s.id for s in snaps] == [snap_id]
    assert snaps[0].label == "before the agent"
    assert snaps[0].head == head.strip()
    assert snaps[0].commit == commit


def test_restore_brings_back_exact_state_and_spares_ignored_files(repo: Path) -> None:
    (repo / "untracked.txt").write_text("was untracked\n")
    before = state(repo)
    keep_mtime = (repo / "keep.txt").stat().st_mtime_ns
    snap_id = snapshot(repo, "start")
    index = index_bytes(repo)

    (repo / "a.txt").write_text("changed by agent\n")
    (repo / "sub" / "b.txt").unlink()
    (repo / "sub").rmdir()
    (repo / "untracked.txt").unlink()
    (repo / "blob.bin").write_bytes(b"\x00garbage")
    (repo / "new.txt").write_text("created\n")
    (repo / "deep" / "er").mkdir(parents=True)
    (repo / "deep" / "er" / "x.py").write_text("x = 1\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "debug.log").write_text("ignored, must survive\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_bytes(b"\x7fELF")

    backup = restore(repo, snap_id)

    after = state(repo)
    assert after.pop("debug.log") == b"ignored, must survive\n"
    assert after.pop("build/out.o") == b"\x7fELF"
    assert after == before
    assert not (repo / "deep").exists(), "directories emptied by the restore are pruned"
    assert not os.access(repo / "run.sh", os.X_OK)
    assert (repo / "keep.txt").stat().st_mtime_ns == keep_mtime, "unchanged files not rewritten"
    assert index_bytes(repo) == index

    # The rewind is itself rewindable.
    assert backup is not None
    restore(repo, backup, backup=False)
    assert (repo / "a.txt").read_text() == "changed by agent\n"
    assert (repo / "deep" / "er" / "x.py").exists()
    assert os.access(repo / "run.sh", os.X_OK)


def test_restore_file_directory_swap(repo: Path) -> None:
    snap_id = snapshot(repo, "start")
    (repo / "a.txt").unlink()
    (repo / "a.txt").mkdir()
    (repo / "a.txt" / "inner").write_text("now a dir\n")
    (repo / "sub" / "b.txt").unlink()
    (repo / "sub").rmdir()
    (repo / "sub").write_text("now a file\n")
    restore(repo, snap_id, backup=False)
    assert (repo / "a.txt").read_text() == "alpha\n"
    assert (repo / "sub" / "b.txt").read_text() == "bravo\n"


def test_diff_since_reports_changes_binary_safely(repo: Path) -> None:
    snap_id = snapshot(repo, "start")
    assert diff_since(repo, snap_id) == ""
    (repo / "a.txt").write_text("alpha\nmore\n")
    (repo / "new.bin").write_bytes(b"\x00\x01\x02" * 50)
    (repo / "sub" / "b.txt").unlink()
    patch = diff_since(repo, snap_id)
    assert "+more" in patch
    assert "diff --git a/new.bin b/new.bin" in patch
    assert "GIT binary patch" in patch
    assert "deleted file mode 100644" in patch
    # The patch reverses cleanly: it is a real, complete patch.
    subprocess.run(
        ["git", "apply", "--binary", "-R", "-"], cwd=repo, input=patch.encode(), check=True
    )
    assert (repo / "sub" / "b.txt").read_text() == "bravo\n"
    assert not (repo / "new.bin").exists()


def test_repo_without_commits(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fresh", commit=False)
    before = state(repo)
    snap_id = snapshot(repo, "first")
    assert list_snapshots(repo)[0].head is None
    (repo / "a.txt").write_text("edited\n")
    (repo / "extra.txt").write_text("extra\n")
    restore(repo, snap_id, backup=False)
    assert state(repo) == before
    assert not (repo / ".git" / "index").exists(), "no index was created for the person"


def test_unknown_snapshot_and_bad_ids(repo: Path) -> None:
    with pytest.raises(KeyError):
        restore(repo, "20000101T000000000Z-abcdef")
    with pytest.raises(ValueError):
        diff_since(repo, "../heads/main")


def test_capture_tree_works_from_a_subdirectory(repo: Path) -> None:
    (repo / "top.txt").write_text("top-level untracked\n")
    tree = capture_tree(repo)
    assert capture_tree(repo / "sub") == tree, "the whole tree, wherever it is called from"
    listing = run_git(repo, "ls-tree", "-r", "--name-only", tree)
    assert "top.txt" in listing.split()
    snap_id = snapshot(repo / "sub", "from a subdirectory")
    commit = list_snapshots(repo)[0].commit
    assert run_git(repo, "show", f"{commit}:top.txt") == "top-level untracked\n"
    assert list_snapshots(repo)[0].id == snap_id


def test_same_size_edit_right_after_an_index_write_is_seen(repo: Path) -> None:
    """Racy-git regression: a same-size edit made in the same second as the person's last index
    write, captured a moment later, must not look unchanged (the temporary index has to keep
    the real index's mtime for git's racy-entry check to work)."""
    (repo / "a.txt").write_text("old-1\n")
    run_git(repo, "commit", "-qam", "same second")
    (repo / "a.txt").write_text("new-2\n")  # same size, (almost always) same second
    time.sleep(1.1)  # the snapshot happens later, as it does in real use
    commit = run_git(repo, "rev-parse", SNAPSHOT_REF_PREFIX + snapshot(repo, "t")).strip()
    assert run_git(repo, "show", f"{commit}:a.txt") == "new-2\n"


def test_prune_keeps_the_newest(repo: Path) -> None:
    ids = []
    for i in range(4):
        (repo / "a.txt").write_text(f"state {i}\n")
        ids.append(snapshot(repo, f"s{i}"))
    assert [s.id for s in list_snapshots(repo)] == ids, "oldest first"
    assert prune_snapshots(repo, keep=2) == ids[:2]
    assert [s.label for s in list_snapshots(repo)] == ["s2", "s3"]
