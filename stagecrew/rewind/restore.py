"""Putting the workspace back to a point: only the paths that differ, through git itself.

The current tree (a point of the present, taken first) and the target tree are compared by
``git diff-tree``; paths the target lacks are deleted, the others are written by
``checkout-index`` from a throw-away index holding the target tree (modes, symlinks and binary
content exactly as stored). Files that did not change keep their mtimes, so a rewind does not
trigger a full rebuild, and nothing the points leave out (skipped big files, bulk directories,
``.stagecrew/``) is touched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from stagecrew.rewind.points import Change
from stagecrew.rewind.scan import text
from stagecrew.rewind.shadow import ShadowRepo

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

# Patch flags fixed here, so a preview never depends on anyone's diff configuration.
PREVIEW_FLAGS = (
    "-p",
    "-r",
    "--no-renames",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)


def tree_changes(repo: ShadowRepo, old: str, new: str) -> list[Change]:
    """The paths that differ between two trees, with their status (A, M, D, T)."""
    if old == new:
        return []
    raw = repo.run("diff-tree", "-r", "-z", "--no-renames", "--name-status", old, new)
    fields = raw.split(b"\0")
    return [
        Change(status=fields[i].decode()[:1], path=text(fields[i + 1]))
        for i in range(0, len(fields) - 1, 2)
        if fields[i]
    ]


def preview(repo: ShadowRepo, current: str, target: str) -> str:
    """The patch restoring ``target`` would apply to the ``current`` tree (text; binary files
    are named, not dumped)."""
    if current == target:
        return ""
    return repo.run("diff-tree", *PREVIEW_FLAGS, current, target).decode("utf-8", errors="replace")


def apply_tree(repo: ShadowRepo, current: str, target: str) -> list[Change]:
    """Make the workspace, now at ``current``, match ``target``; returns what changed
    (status as seen from ``current``: D for a path the rewind deleted, A for one it brought
    back)."""
    raw = repo.run("diff-tree", "-r", "-z", "--no-renames", current, target)
    fields = raw.split(b"\0")
    deletes: list[bytes] = []
    writes: list[bytes] = []
    changes: list[Change] = []
    for i in range(0, len(fields) - 1, 2):
        meta, path = fields[i], fields[i + 1]
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, _old, _new, status = meta[1:].split(b" ")
        if b"160000" in (old_mode, new_mode):
            continue  # a gitlink: never captured by the store, never ours to write
        kind = status[:1]
        if kind == b"D":
            deletes.append(path)
        elif kind == b"T":
            deletes.append(path)  # file <-> symlink: remove first, checkout writes the new kind
            writes.append(path)
        else:
            writes.append(path)
        changes.append(Change(status=kind.decode(), path=text(path)))
    root = os.fsencode(repo.workspace)
    for rel in deletes:
        _remove(root, rel)
    if writes:
        index = repo.root / "restore-index"
        env = repo.env(GIT_INDEX_FILE=str(index))
        try:
            repo.run("read-tree", target, env=env)
            repo.run(
                "checkout-index", "-f", "-z", "--stdin", env=env, input=b"\0".join(writes) + b"\0"
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                index.unlink()
    return changes


def _remove(root: bytes, rel: bytes) -> None:
    """Delete one captured path (a file or symlink, never followed) and the directories its
    removal left empty, up to the workspace root."""
    path = os.path.join(root, rel)
    if os.path.isdir(path) and not os.path.islink(path):
        return  # not what the point captured there; what is inside was never ours to delete
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    parent = Path(os.fsdecode(os.path.dirname(path)))
    top = Path(os.fsdecode(root))
    while parent != top and top in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


__all__ = ["EMPTY_TREE", "apply_tree", "preview", "tree_changes"]
