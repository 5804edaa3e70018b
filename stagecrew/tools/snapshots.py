"""Rewind points for a person's working tree that never touch their index, HEAD or branches.

A snapshot is an ordinary git commit built from a *temporary* index (``GIT_INDEX_FILE``): copy
the person's index (so git's stat cache spares rehashing every file), ``git add -A``,
``write-tree``, ``commit-tree`` with HEAD as parent, and point ``refs/stagecrew/snapshots/<id>``
at it. The person's staging area, HEAD and reflog stay exactly as they were; the only writes are
new objects and that ref. Untracked-but-not-ignored files are captured; ignored files (build
output, virtualenvs) are neither captured nor touched by ``restore``.

This module also hosts the small git plumbing helpers that worktrees and the judge's diff share
(``git``, ``capture_tree``, ``tree_diff``), because all three need the same "tree of what the
person currently sees" and the same byte-exact patch format.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

SNAPSHOT_REF_PREFIX = "refs/stagecrew/snapshots/"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

# One identity for every commit stagecrew writes, so snapshots work in repos (and CI machines)
# with no user.name configured, and are recognisable in `git log --all`.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "stagecrew",
    "GIT_AUTHOR_EMAIL": "stagecrew@localhost",
    "GIT_COMMITTER_NAME": "stagecrew",
    "GIT_COMMITTER_EMAIL": "stagecrew@localhost",
}

# Explicit flags so the patch bytes never depend on the person's diff config (renames, prefixes,
# colour, external diff drivers, textconv): two patches of the same change are byte-identical.
PATCH_FLAGS = (
    "-r",
    "-p",
    "--binary",
    "--full-index",
    "--no-renames",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)

SnapshotId = str


class GitError(RuntimeError):
    """A git command failed; the message carries the command and git's own stderr."""


class Snapshot(BaseModel):
    """A rewind point: the commit holding the working tree state, and why it was taken."""

    id: SnapshotId
    label: str
    commit: str
    created_at: datetime
    head: str | None  # HEAD at the time, None in a repo with no commits yet


def decode_git(raw: bytes) -> str:
    """Git output as text that still round-trips to the exact bytes (see ``encode_patch``)."""
    # surrogateescape keeps non-UTF-8 bytes (latin-1 sources, odd filenames) round-trippable.
    return raw.decode("utf-8", errors="surrogateescape")


def encode_patch(patch: str) -> bytes:
    """The exact bytes of a patch string produced by this module (inverse of its decoding)."""
    return patch.encode("utf-8", errors="surrogateescape")


def git(
    repo: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run git in ``repo`` with bytes in and out; raise ``GitError`` on failure if ``check``."""
    full_env = dict(os.environ)
    full_env.update(_IDENTITY)
    full_env["GIT_TERMINAL_PROMPT"] = "0"
    if env:
        full_env.update(env)
    proc = subprocess.run(
        ["git", *args],
        cwd=repo,
        env=full_env,
        input=input,
        capture_output=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise GitError(
            f"git {' '.join(args)} failed in {repo} (exit {proc.returncode}): "
            f"{decode_git(proc.stderr).strip()}"
        )
    return proc


def git_text(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    return decode_git(git(repo, *args, env=env).stdout).strip()


def toplevel(repo: Path) -> Path:
    """The root of the working tree containing ``repo`` (raises ``GitError`` if not in one)."""
    return Path(git_text(repo, "rev-parse", "--show-toplevel"))


def head_commit(repo: Path) -> str | None:
    """HEAD's commit id, or None for a repository with no commits yet."""
    proc = git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    return decode_git(proc.stdout).strip() if proc.returncode == 0 else None


@contextmanager
def temporary_index(repo: Path, *, seed: bool = True) -> Iterator[dict[str, str]]:
    """An env dict pointing ``GIT_INDEX_FILE`` at a throw-away copy of ``repo``'s index.

    Seeding from the real index keeps git's stat cache, so ``add -A`` only rehashes files that
    changed; without it every file in the repository is read.
    """
    real_index = Path(git_text(repo, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    tmpdir = Path(tempfile.mkdtemp(prefix="stagecrew-index-"))
    tmp_index = tmpdir / "index"
    try:
        if seed and real_index.exists():
            # copy2, not copyfile: the copy must keep the index's mtime. Git trusts a cached
            # stat only for files older than the index file ("racy git"); a fresh mtime on the
            # copy would make a same-size edit made in the same second as the last index write
            # look unchanged, and the edit would silently vanish from snapshots and patches.
            shutil.copy2(real_index, tmp_index)
        yield {"GIT_INDEX_FILE": str(tmp_index)}
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def capture_tree(repo: Path) -> str:
    """The tree id of what the person sees: tracked edits, deletions and untracked, non-ignored
    files, without touching their index."""
    with temporary_index(repo) as env:
        git(repo, "add", "-A", "--", ":/", env=env)
        return git_text(repo, "write-tree", env=env)


def tree_diff(repo: Path, old: str, new: str) -> str:
    """Byte-exact, binary-safe patch from tree-ish ``old`` to ``new`` (see ``PATCH_FLAGS``)."""
    return decode_git(git(repo, "diff-tree", *PATCH_FLAGS, old, new).stdout)


def _snapshot_ref(snapshot_id: SnapshotId) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", snapshot_id) or ".." in snapshot_id:
        raise ValueError(f"invalid snapshot id: {snapshot_id!r}")
    return SNAPSHOT_REF_PREFIX + snapshot_id


def snapshot(repo: Path, label: str) -> SnapshotId:
    """Record the working tree as a commit under ``refs/stagecrew/snapshots/<id>``; return id.

    Ids sort by creation time (UTC timestamp plus a random suffix, so two snapshots in the same
    second do not collide).
    """
    root = toplevel(repo)
    tree = capture_tree(root)
    head = head_commit(root)
    parents = ["-p", head] if head else []
    # The label is the commit subject, so it must stay on one line.
    message = "stagecrew snapshot: " + " ".join(label.split()) + "\n"
    commit = git_text(root, "commit-tree", tree, *parents, "-m", message)
    now = datetime.now(UTC)
    snapshot_id = f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"
    git(root, "update-ref", _snapshot_ref(snapshot_id), commit, "")
    return snapshot_id


def _label_from_message(subject: str) -> str:
    prefix = "stagecrew snapshot: "
    return subject[len(prefix) :] if subject.startswith(prefix) else subject


def list_snapshots(repo: Path) -> list[Snapshot]:
    """Every snapshot of this repository, oldest first."""
    root = toplevel(repo)
    fmt = "%(refname)%00%(objectname)%00%(committerdate:unix)%00%(contents:subject)%00%(parent)"
    out = git_text(root, "for-each-ref", f"--format={fmt}", SNAPSHOT_REF_PREFIX)
    snaps: list[Snapshot] = []
    for line in out.splitlines():
        if not line:
            continue
        refname, commit, stamp, subject, parent = (line.split("\0") + [""] * 5)[:5]
        snaps.append(
            Snapshot(
                id=refname[len(SNAPSHOT_REF_PREFIX) :],
                label=_label_from_message(subject),
                commit=commit,
                created_at=datetime.fromtimestamp(int(stamp or 0), UTC),
                head=parent.split()[0] if parent.strip() else None,
            )
        )
    snaps.sort(key=lambda s: s.id)
    return snaps


def snapshot_commit(repo: Path, snapshot_id: SnapshotId) -> str:
    """The commit a snapshot id names; ``KeyError`` if there is no such snapshot."""
    proc = git(
        repo,
        "rev-parse",
        "--verify",
        "--quiet",
        _snapshot_ref(snapshot_id) + "^{commit}",
        check=False,
    )
    if proc.returncode != 0:
        raise KeyError(f"no snapshot {snapshot_id!r} in {repo}")
    return decode_git(proc.stdout).strip()


def delete_snapshot(repo: Path, snapshot_id: SnapshotId) -> None:
    """Forget a snapshot (its objects become garbage for ``git gc`` in due course)."""
    git(repo, "update-ref", "-d", _snapshot_ref(snapshot_id))


def diff_since(repo: Path, snapshot_id: SnapshotId) -> str:
    """The patch that takes the snapshot's state to the current working tree (byte-exact)."""
    root = toplevel(repo)
    commit = snapshot_commit(root, snapshot_id)
    return tree_diff(root, commit, capture_tree(root))


def _changed_paths(root: Path, old_tree: str, new_tree: str) -> tuple[list[bytes], list[bytes]]:
    """(paths to delete, paths to write) to turn ``old_tree`` into ``new_tree`` on disk."""
    raw = git(root, "diff-tree", "-r", "-z", "--no-renames", old_tree, new_tree).stdout
    fields = raw.split(b"\0")
    deletes: list[bytes] = []
    writes: list[bytes] = []
    i = 0
    while i + 1 < len(fields):
        meta, path = fields[i], fields[i + 1]
        i += 2
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, _old_sha, _new_sha, status = meta[1:].split(b" ")
        if b"160000" in (old_mode, new_mode):
            continue  # submodules are left to the person
        if status.startswith(b"D"):
            deletes.append(path)
        elif status.startswith(b"T"):
            deletes.append(path)  # file <-> symlink: remove first so checkout creates the new kind
            writes.append(path)
        else:
            writes.append(path)
    return deletes, writes


def _remove_path(root: Path, rel: bytes) -> None:
    path = Path(os.fsdecode(os.path.join(os.fsencode(root), rel)))
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    # Prune directories the deletion emptied, up to (not including) the root.
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def restore_tree(repo: Path, target_tree: str) -> None:
    """Make the working tree match ``target_tree`` exactly, touching only paths that differ.

    Unchanged files keep their mtimes (no spurious rebuilds); ignored files are left alone; the
    person's index and HEAD are untouched (their stat cache simply refreshes on next use).
    """
    root = toplevel(repo)
    current = capture_tree(root)
    deletes, writes = _changed_paths(root, current, target_tree)
    for rel in deletes:
        _remove_path(root, rel)
    if not writes:
        return
    with temporary_index(root, seed=False) as env:
        git(root, "read-tree", target_tree, env=env)
        git(
            root,
            "checkout-index",
            "-f",
            "-z",
            "--stdin",
            env=env,
            input=b"\0".join(writes) + b"\0",
        )


def restore(repo: Path, snapshot_id: SnapshotId, *, backup: bool = True) -> SnapshotId | None:
    """Put the working tree back exactly as it was at ``snapshot_id``.

    Modified files get their old content, files created since are removed, deleted files come
    back. With ``backup`` (the default) the state being thrown away is snapshotted first and its
    id returned, so a rewind can itself be rewound.
    """
    root = toplevel(repo)
    commit = snapshot_commit(root, snapshot_id)
    backup_id = snapshot(root, f"before restoring {snapshot_id}") if backup else None
    restore_tree(root, git_text(root, "rev-parse", commit + "^{tree}"))
    return backup_id


def prune_snapshots(repo: Path, *, keep: int) -> list[SnapshotId]:
    """Delete all but the newest ``keep`` snapshots; returns the ids deleted."""
    snaps = list_snapshots(repo)
    doomed = snaps[: max(0, len(snaps) - keep)]
    for snap in doomed:
        delete_snapshot(repo, snap.id)
    return [snap.id for snap in doomed]


__all__ = [
    "EMPTY_TREE",
    "PATCH_FLAGS",
    "SNAPSHOT_REF_PREFIX",
    "GitError",
    "Snapshot",
    "SnapshotId",
    "capture_tree",
    "decode_git",
    "delete_snapshot",
    "diff_since",
    "encode_patch",
    "git",
    "git_text",
    "head_commit",
    "list_snapshots",
    "prune_snapshots",
    "restore",
    "restore_tree",
    "snapshot",
    "snapshot_commit",
    "temporary_index",
    "toplevel",
    "tree_diff",
]
