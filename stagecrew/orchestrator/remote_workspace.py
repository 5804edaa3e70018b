"""Work on a node that does not have the repository: ship it as a git bundle, bring back a patch.

The person's working tree (uncommitted changes included) is recorded as a snapshot commit —
their index and HEAD untouched — and bundled; the bundle travels through Ray's object store to
the target node, where a clone at that commit becomes the actor's own, local workspace. When
the actor is done, its changes come back as one binary-safe patch against that commit, which
the supervisor applies to the person's tree after a snapshot they can rewind to.

The functions are plain; the supervisor runs the node-side ones as Ray tasks pinned to the node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from stagecrew.tools.snapshots import SNAPSHOT_REF_PREFIX, snapshot, snapshot_commit, toplevel


def _git(repo: Path | str, *args: str, env: dict[str, str] | None = None) -> bytes:
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    return subprocess.run(
        ["git", *args], cwd=repo, env=full_env, check=True, capture_output=True
    ).stdout


def bundle_workspace(workspace: Path | str) -> tuple[bytes, str]:
    """The working tree as a git bundle, and the commit it holds."""
    root = toplevel(Path(workspace))
    snap = snapshot(root, "shipped to another node")
    commit = snapshot_commit(root, snap)
    with tempfile.TemporaryDirectory(prefix="stagecrew-bundle-") as tmp:
        path = Path(tmp) / "workspace.bundle"
        _git(root, "bundle", "create", str(path), SNAPSHOT_REF_PREFIX + snap)
        return path.read_bytes(), commit


def materialise(bundle: bytes, commit: str) -> str:
    """On the target node: a fresh local clone checked out at ``commit``; returns its path."""
    base = Path(tempfile.mkdtemp(prefix="stagecrew-remote-"))
    bundle_path = base / "workspace.bundle"
    bundle_path.write_bytes(bundle)
    repo = base / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    # A clone would fetch only branches; the bundle holds a snapshot ref.
    _git(repo, "fetch", "-q", str(bundle_path), f"+{SNAPSHOT_REF_PREFIX}*:{SNAPSHOT_REF_PREFIX}*")
    _git(repo, "checkout", "-q", "--detach", commit)
    bundle_path.unlink()
    return str(repo)


def patch_since(repo: Path | str, commit: str) -> str:
    """Everything the actor changed since ``commit`` (new files included), as a binary patch."""
    index = Path(repo) / ".git" / "stagecrew-patch-index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        _git(repo, "read-tree", commit, env=env)
        _git(repo, "add", "-A", "--", ".", ":(exclude).stagecrew/state", env=env)
        raw = _git(
            repo, "diff", "--cached", "--binary", "--full-index", "--no-renames", commit, env=env
        )
    finally:
        index.unlink(missing_ok=True)
    return raw.decode("utf-8", errors="surrogateescape")


def remove(repo: Path | str) -> None:
    shutil.rmtree(Path(repo).parent, ignore_errors=True)
