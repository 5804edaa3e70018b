"""Candidate worktrees and patch application against real git repositories."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from stagecrew.tools.snapshots import diff_since, encode_patch, list_snapshots, restore
from stagecrew.tools.worktrees import (
    PatchApplyError,
    WorktreeError,
    WorktreeManager,
    apply_patch_to,
)

BINARY = bytes(range(256)) * 8


def run_git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def state(repo: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            if name == ".git":  # a worktree's .git is a file pointing at the admin directory
                continue
            full = Path(dirpath) / name
            files[str(full.relative_to(repo))] = full.read_bytes()
    return files


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "person"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    run_git(path, "config", "user.name", "Test Person")
    run_git(path, "config", "user.email", "person@example.com")
    (path / ".gitignore").write_text("*.log\n.venv/\n")
    (path / "app.py").write_text("def main():\n    return 1\n")
    (path / "doomed.txt").write_text("the person deletes this\n")
    (path / "lib").mkdir()
    (path / "lib" / "util.py").write_text("X = 1\n")
    (path / "logo.png").write_bytes(BINARY)
    (path / "notes.txt").write_text("one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\n")
    run_git(path, "add", "-A")
    run_git(path, "commit", "-q", "-m", "initial")
    # The person's uncommitted work, in every flavour.
    (path / "app.py").write_text("def main():\n    return 2  # person's edit\n")
    (path / "doomed.txt").unlink()
    (path / "scratch.py").write_text("print('untracked, not ignored')\n")
    (path / "lib" / "util.py").write_text("X = 1\nY = 2\n")
    run_git(path, "add", "lib/util.py")  # staged, to prove the index is left alone
    (path / "debug.log").write_text("ignored\n")
    (path / ".venv").mkdir()
    (path / ".venv" / "big").write_text("ignored dir\n")
    return path


@pytest.fixture
def manager(repo: Path, tmp_path: Path) -> WorktreeManager:
    mgr = WorktreeManager(repo, tmp_path / "candidates")
    yield mgr
    mgr.cleanup()


def candidate_work(wt: Path) -> None:
    """A candidate that edits, adds text and binary files, deletes, and makes a file executable."""
    (wt / "app.py").write_text("def main():\n    return 3  # candidate\n")
    (wt / "lib" / "new_mod.py").write_text("def helper():\n    return 'new'\n")
    (wt / "assets").mkdir()
    (wt / "assets" / "icon.bin").write_bytes(b"\x00\xff" * 300 + b"\x01")
    (wt / "logo.png").write_bytes(BINARY[::-1])
    (wt / "scratch.py").unlink()
    (wt / "latin1.txt").write_bytes("café crème\n".encode("latin-1"))
    (wt / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (wt / "tool.sh").chmod(0o755)


def test_create_starts_from_what_the_person_sees(repo: Path, manager: WorktreeManager) -> None:
    index_before = (repo / ".git" / "index").read_bytes()
    status_before = run_git(repo, "status", "--porcelain")
    wt = manager.create("cand-1")

    assert wt == manager.root / "cand-1"
    assert (wt / "app.py").read_text() == "def main():\n    return 2  # person's edit\n"
    assert not (wt / "doomed.txt").exists()
    assert (wt / "scratch.py").exists(), "untracked, non-ignored files come along"
    assert (wt / "lib" / "util.py").read_text() == "X = 1\nY = 2\n"
    assert (wt / "logo.png").read_bytes() == BINARY
    assert not (wt / "debug.log").exists(), "ignored files stay behind"
    assert not (wt / ".venv").exists()
    # The candidate sees a clean tree: its own diff starts empty.
    assert run_git(wt, "status", "--porcelain") == ""
    assert manager.patch(wt) == ""
    # The person's repository is exactly as it was.
    assert (repo / ".git" / "index").read_bytes() == index_before
    assert run_git(repo, "status", "--porcelain") == status_before
    assert run_git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"

    with pytest.raises(WorktreeError):
        manager.create("cand-1")
    with pytest.raises(WorktreeError):
        manager.create("../escape")


def test_patch_is_only_the_candidate_change(repo: Path, manager: WorktreeManager) -> None:
    wt = manager.create("c")
    candidate_work(wt)
    run_git(wt, "add", "lib/new_mod.py")
    run_git(wt, "commit", "-q", "-m", "candidate commits part of its work")
    patch = manager.patch(wt)

    assert "person's edit" in patch and "+    return 3  # candidate" in patch
    assert "doomed.txt" not in patch, "the person's own deletion is not the candidate's change"
    assert "diff --git a/lib/new_mod.py b/lib/new_mod.py" in patch, "committed work included"
    assert "diff --git a/assets/icon.bin b/assets/icon.bin" in patch
    assert patch.count("GIT binary patch") == 2
    assert "deleted file mode 100644" in patch  # scratch.py
    assert "new file mode 100755" in patch  # tool.sh
    # Deterministic: asking twice gives the same bytes.
    assert manager.patch(wt) == patch


def test_winner_patch_applies_byte_exact(repo: Path, manager: WorktreeManager) -> None:
    wt = manager.create("winner")
    candidate_work(wt)
    patch = manager.patch(wt)
    person_before = state(repo)
    index_before = (repo / ".git" / "index").read_bytes()

    result = apply_patch_to(repo, patch)

    assert result.method == "3way"
    assert result.exact
    assert result.snapshot_id in [s.id for s in list_snapshots(repo)]
    # The change since the pre-apply snapshot is byte-for-byte the winner's patch.
    assert encode_patch(diff_since(repo, result.snapshot_id)) == encode_patch(patch)
    # And the person's tree now holds exactly the candidate's files (plus their ignored ones).
    after = state(repo)
    assert after.pop("debug.log") == b"ignored\n"
    assert after.pop(".venv/big") == b"ignored dir\n"
    assert after == state(wt)
    assert (repo / "latin1.txt").read_bytes() == "café crème\n".encode("latin-1")
    assert os.access(repo / "tool.sh", os.X_OK)
    assert (repo / ".git" / "index").read_bytes() == index_before, "person's index untouched"

    # The person can rewind the whole thing.
    restore(repo, result.snapshot_id, backup=False)
    assert state(repo) == person_before


def test_apply_merges_around_the_person_edits(repo: Path, manager: WorktreeManager) -> None:
    wt = manager.create("c")
    (wt / "notes.txt").write_text("one\ntwo\nthree\nfour\nfive\nsix\nseven\nEIGHT\n")
    patch = manager.patch(wt)
    # Meanwhile the person edits the top of the same file.
    (repo / "notes.txt").write_text("ONE\ntwo\nthree\nfour\nfive\nsix\nseven\neight\n")
    result = apply_patch_to(repo, patch)
    assert (repo / "notes.txt").read_text() == "ONE\ntwo\nthree\nfour\nfive\nsix\nseven\nEIGHT\n"
    assert result.method == "3way"
    assert not result.exact, "merged, so not literally the candidate's patch"


def test_conflicting_patch_leaves_tree_untouched(repo: Path, manager: WorktreeManager) -> None:
    wt = manager.create("c")
    (wt / "app.py").write_text("def main():\n    return 'candidate'\n")
    patch = manager.patch(wt)
    (repo / "app.py").write_text("def main():\n    return 'person changed it again'\n")
    before = state(repo)
    snaps_before = len(list_snapshots(repo))
    with pytest.raises(PatchApplyError) as info:
        apply_patch_to(repo, patch)
    assert state(repo) == before, "no conflict markers, no partial application"
    assert info.value.snapshot_id is not None
    assert len(list_snapshots(repo)) == snaps_before + 1


def test_empty_patch_is_a_no_op(repo: Path) -> None:
    result = apply_patch_to(repo, "")
    assert result.method == "empty" and result.snapshot_id is None and result.exact


def test_cleanup_leaves_nothing_behind(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "wts"
    mgr = WorktreeManager(repo, root)
    paths: list[Path] = []
    errors: list[BaseException] = []

    def make(name: str) -> None:
        try:
            paths.append(mgr.create(name))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(f"cand-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert mgr.names() == ["cand-0", "cand-1", "cand-2"]
    for path in paths:
        (path / "work.txt").write_text("candidate output\n")
    # One directory vanishes behind git's back; cleanup must still prune its admin entry.
    shutil.rmtree(paths[0])
    mgr.remove("cand-1")
    assert mgr.names() == ["cand-0", "cand-2"]

    mgr.cleanup()

    listing = run_git(repo, "worktree", "list", "--porcelain")
    assert listing.count("worktree ") == 1
    admin = repo / ".git" / "worktrees"
    assert not admin.exists() or not any(admin.iterdir())
    assert run_git(repo, "for-each-ref", "refs/stagecrew/worktrees/") == ""
    assert not root.exists()
    assert mgr.names() == []


def test_other_managers_are_not_disturbed(repo: Path, tmp_path: Path) -> None:
    a = WorktreeManager(repo, tmp_path / "a")
    b = WorktreeManager(repo, tmp_path / "b")
    a.create("same-name")
    wt_b = b.create("same-name")
    a.cleanup()
    assert b.names() == ["same-name"]
    assert manager_patch_works(b, wt_b)
    b.cleanup()


def manager_patch_works(mgr: WorktreeManager, wt: Path) -> bool:
    (wt / "x.txt").write_text("x\n")
    return "diff --git a/x.txt b/x.txt" in mgr.patch(wt)


def test_repo_without_commits_is_refused(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_git(fresh, "init", "-q")
    mgr = WorktreeManager(fresh, tmp_path / "wt")
    with pytest.raises(WorktreeError, match="no commits"):
        mgr.create("c")
    mgr.cleanup()


def test_root_inside_the_working_tree_must_be_ignored_or_under_git(repo: Path) -> None:
    with pytest.raises(WorktreeError, match="inside the working tree"):
        WorktreeManager(repo, repo / "candidates")
    assert not (repo / "candidates").exists()
    status = run_git(repo, "status", "--porcelain")
    for root in (repo / ".git" / "stagecrew-wt", repo / ".venv" / "wt"):
        mgr = WorktreeManager(repo, root)
        wt = mgr.create("c")
        (wt / "new.txt").write_text("x\n")
        assert "new.txt" in mgr.patch(wt)
        assert run_git(repo, "status", "--porcelain") == status
        mgr.cleanup()
        assert not root.exists()
