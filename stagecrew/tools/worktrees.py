"""Git worktrees for Max Mode candidates, and applying the winner back to the person's tree.

Each candidate works in its own detached worktree that starts from *what the person sees*, not
from HEAD: their uncommitted edits, deletions and untracked (non-ignored) files are captured into
a baseline commit (through a temporary index, so their own index is untouched) and the worktree
is checked out at it. Consequences worth knowing:

* inside the worktree ``git status`` is clean at the start and ``git diff`` shows only the
  candidate's own work, which is what the candidate agent should reason about;
* the candidate's patch is ``diff(baseline, current state)`` — commits the candidate makes in
  its worktree are included, and nothing of the person's pre-existing changes is;
* the baseline is kept alive by ``refs/stagecrew/worktrees/<root-key>/<name>`` until removal;
* ignored files (virtualenvs, ``node_modules``, build output) are *not* copied; a candidate
  that needs them must recreate them.

Patches are strings decoded with ``surrogateescape``: ``encode_patch`` gives back the exact
bytes (non-UTF-8 text files survive the round trip).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from stagecrew.tools.snapshots import (
    GitError,
    SnapshotId,
    capture_tree,
    decode_git,
    diff_since,
    encode_patch,
    git,
    git_text,
    head_commit,
    restore_tree,
    snapshot,
    snapshot_commit,
    temporary_index,
    toplevel,
    tree_diff,
)

WORKTREE_REF_PREFIX = "refs/stagecrew/worktrees/"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class WorktreeError(RuntimeError):
    """A worktree could not be created, found or removed; the message says which and why."""


class PatchApplyError(RuntimeError):
    """A patch did not apply. The working tree was put back to ``snapshot_id`` untouched."""

    def __init__(self, message: str, snapshot_id: SnapshotId | None) -> None:
        super().__init__(message)
        self.snapshot_id = snapshot_id


class ApplyResult(BaseModel):
    """How a patch landed in the person's tree, and the snapshot that undoes it."""

    snapshot_id: SnapshotId | None  # None only for an empty patch (nothing was changed)
    method: Literal["3way", "plain", "empty"]
    # True when the tree's change since the snapshot is byte-for-byte the patch. False means
    # the person had edited the same files since the candidates started and git merged around
    # their edits: correct, but not literally the candidate's patch.
    exact: bool


class WorktreeManager:
    """Creates, diffs and removes candidate worktrees of ``repo`` under ``root``.

    Thread-safe for the bookkeeping git itself does not lock (creating and pruning admin
    entries), so candidates can be set up concurrently from threads.
    """

    def __init__(self, repo: Path, root: Path) -> None:
        self.repo = toplevel(Path(repo))
        self.root = Path(root).resolve()
        self._refuse_root_in_working_tree()
        self.root.mkdir(parents=True, exist_ok=True)
        # Refs are namespaced by root so two managers on one repo never delete each other's.
        key = hashlib.sha1(str(self.root).encode(), usedforsecurity=False).hexdigest()[:12]
        self._ref_prefix = f"{WORKTREE_REF_PREFIX}{key}/"
        self._lock = threading.Lock()

    def _refuse_root_in_working_tree(self) -> None:
        """Worktrees inside the person's tree would show up in their ``git status``, snapshots
        and diffs as nested repositories. Inside ``.git`` or an ignored directory is fine."""
        if not self.root.is_relative_to(self.repo):
            return
        git_dir = Path(git_text(self.repo, "rev-parse", "--path-format=absolute", "--git-dir"))
        if self.root.is_relative_to(git_dir.resolve()):
            return
        rel = self.root.relative_to(self.repo).as_posix()
        ignored = git(self.repo, "check-ignore", "-q", "--no-index", rel + "/", check=False)
        if ignored.returncode != 0:
            raise WorktreeError(
                f"worktree root {self.root} is inside the working tree of {self.repo} and not "
                "ignored; put it outside the repository, under .git/, or in an ignored directory"
            )

    def path_of(self, name: str) -> Path:
        """Where worktree ``name`` lives (whether or not it exists)."""
        self._check_name(name)
        return self.root / name

    def _check_name(self, name: str) -> None:
        if not _NAME.fullmatch(name) or name.endswith(".lock") or ".." in name:
            raise WorktreeError(
                f"invalid worktree name {name!r}: use letters, digits, '.', '_' or '-' "
                "(at most 100 characters, not starting with a punctuation mark)"
            )

    def _ref(self, name: str) -> str:
        return self._ref_prefix + name

    def create(self, name: str) -> Path:
        """A new detached worktree at the person's current state (HEAD + uncommitted changes)."""
        path = self.path_of(name)
        head = head_commit(self.repo)
        if head is None:
            raise WorktreeError(f"{self.repo} has no commits yet; worktrees need a HEAD commit")
        with self._lock:
            if path.exists() or self._base(name) is not None:
                raise WorktreeError(f"worktree {name!r} already exists at {path}")
            tree = capture_tree(self.repo)
            if tree == git_text(self.repo, "rev-parse", f"{head}^{{tree}}"):
                base = head
            else:
                base = git_text(
                    self.repo,
                    "commit-tree",
                    tree,
                    "-p",
                    head,
                    "-m",
                    f"stagecrew baseline for candidate {name}\n\n"
                    "The person's uncommitted changes (tracked and untracked) at the time the "
                    "candidate started.\n",
                )
            git(self.repo, "update-ref", self._ref(name), base, "")
            try:
                git(self.repo, "worktree", "add", "--detach", str(path), base)
            except GitError:
                self._forget(name, path)
                raise
        return path

    def _base(self, name: str) -> str | None:
        proc = git(self.repo, "rev-parse", "--verify", "--quiet", self._ref(name), check=False)
        return decode_git(proc.stdout).strip() if proc.returncode == 0 else None

    def _name_of(self, path: Path) -> str:
        resolved = Path(path).resolve()
        if resolved.parent != self.root:
            raise WorktreeError(f"{path} is not a worktree of this manager (root {self.root})")
        return resolved.name

    def base_commit(self, name: str) -> str:
        """The commit candidate ``name`` started from."""
        base = self._base(name)
        if base is None:
            raise WorktreeError(f"no worktree named {name!r} under {self.root}")
        return base

    def patch(self, path: Path) -> str:
        """The candidate's whole change since its start, binary-safe and including new files."""
        name = self._name_of(path)
        base = self.base_commit(name)
        if not Path(path).is_dir():
            raise WorktreeError(f"worktree {name!r} is missing on disk at {path}")
        return tree_diff(self.repo, base, capture_tree(Path(path)))

    def names(self) -> list[str]:
        """Worktrees this manager knows of: registered with git under root, or with a base ref."""
        found: set[str] = set()
        for wt_path in self._registered_paths():
            if wt_path.parent == self.root:
                found.add(wt_path.name)
        out = git_text(self.repo, "for-each-ref", "--format=%(refname)", self._ref_prefix)
        found.update(ref[len(self._ref_prefix) :] for ref in out.splitlines() if ref)
        return sorted(found)

    def _registered_paths(self) -> list[Path]:
        out = git_text(self.repo, "worktree", "list", "--porcelain")
        return [
            Path(line[len("worktree ") :]).resolve()
            for line in out.splitlines()
            if line.startswith("worktree ")
        ]

    def _forget(self, name: str, path: Path) -> None:
        git(self.repo, "worktree", "remove", "--force", "--force", str(path), check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        git(self.repo, "worktree", "prune", check=False)
        git(self.repo, "update-ref", "-d", self._ref(name), check=False)

    def remove(self, name: str) -> None:
        """Delete the worktree's directory, its admin entry under ``.git/worktrees`` and its ref.

        Works even when the directory was already deleted by hand or the worktree is locked.
        """
        path = self.path_of(name)
        with self._lock:
            self._forget(name, path)

    def cleanup(self) -> None:
        """Remove every worktree of this manager and the root directory if it ends up empty."""
        for name in self.names():
            self.remove(name)
        with self._lock:
            git(self.repo, "worktree", "prune", check=False)
            # Not empty means something else lives there: leave it.
            with contextlib.suppress(OSError):
                self.root.rmdir()


def apply_patch_to(
    repo: Path, patch: str, *, label: str = "before applying a Max Mode patch"
) -> ApplyResult:
    """Apply ``patch`` to the person's working tree, after a snapshot they can rewind to.

    ``git apply --3way`` first (it merges around edits the person made meanwhile), against a
    temporary index because ``--3way`` implies ``--index`` and the person's staging area is not
    ours to change; if that fails, the tree is restored and a plain ``git apply`` is tried. All or
    nothing: on failure no conflict markers are left behind, the tree is exactly as before and
    ``PatchApplyError`` says why.
    """
    root = toplevel(Path(repo))
    data = encode_patch(patch)
    if not data.strip():
        return ApplyResult(snapshot_id=None, method="empty", exact=True)
    snap = snapshot(root, label)
    snap_tree = git_text(root, "rev-parse", f"{snapshot_commit(root, snap)}^{{tree}}")
    apply_args = ("apply", "--binary", "--whitespace=nowarn")
    with temporary_index(root) as env:
        git(root, "add", "-A", "--", ":/", env=env)
        git(root, "update-index", "-q", "--refresh", env=env, check=False)
        three_way = git(root, *apply_args, "--3way", "-", env=env, input=data, check=False)
    if three_way.returncode == 0:
        method: Literal["3way", "plain"] = "3way"
    else:
        restore_tree(root, snap_tree)
        plain = git(root, *apply_args, "-", input=data, check=False)
        if plain.returncode != 0:
            restore_tree(root, snap_tree)
            raise PatchApplyError(
                "patch does not apply to the working tree (left unchanged). "
                f"git apply --3way: {decode_git(three_way.stderr).strip()} | "
                f"git apply: {decode_git(plain.stderr).strip()}",
                snap,
            )
        method = "plain"
    return ApplyResult(snapshot_id=snap, method=method, exact=diff_since(root, snap) == patch)
