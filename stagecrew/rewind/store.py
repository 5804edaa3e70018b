"""The rewind store: points of a workspace, taken, listed, previewed and restored.

A point is a commit on ``refs/heads/points`` of the shadow repository (``shadow.py``), each
commit's parent the previous point, whichever session or agent took it, so "files changed
since the previous point" is a plain tree diff. Taking one costs a handful of git processes:

1. ``ls-files -t -m -d -o --directory`` against the shadow index — what changed, vanished or
   appeared since the last point. The index keeps each file's stat data, so unchanged files
   are neither read nor hashed (git's stat cache), and new directories come back as one entry.
2. ``scan.plan_capture`` applies the caps to that list (new directories are walked here).
3. ``update-index`` with exactly those paths, ``write-tree``, ``commit-tree``, ``update-ref``.

One lock file serialises every operation across processes (parallel subagents share the
workspace); ``restore`` takes a point of the present first, so a rewind can itself be undone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from stagecrew.rewind.points import (
    MAX_LISTED_CHANGES,
    MAX_LISTED_SKIPS,
    TURN,
    Change,
    Point,
    Skip,
    decode_message,
    encode_message,
)
from stagecrew.rewind.restore import EMPTY_TREE, apply_tree, preview, tree_changes
from stagecrew.rewind.scan import BASE_EXCLUDES, exclude_pattern, plan_capture
from stagecrew.rewind.shadow import RewindError, ShadowRepo

POINTS_REF = "refs/heads/points"


class PointNotFound(LookupError):
    """No point with that id in this workspace."""


@dataclass(frozen=True)
class RestoreResult:
    """A finished rewind: the point restored, the point of the tree it replaced (restore that
    one to undo the rewind) and the paths it changed."""

    target: Point
    backup: Point
    changes: list[Change]


@dataclass(frozen=True)
class _Head:
    commit: str
    tree: str
    id: int


class RewindStore:
    """The rewind points of one workspace (``.stagecrew/state/rewind/``)."""

    def __init__(self, workspace: Path | str) -> None:
        self.repo = ShadowRepo(workspace)
        self._known: dict[str, tuple[str, int]] = {}  # commit -> (tree, id): saves a git call

    @property
    def workspace(self) -> Path:
        return self.repo.workspace

    # -- taking points -----------------------------------------------------------------------

    def take(
        self,
        *,
        session: str,
        tool: str = TURN,
        label: str = "",
        step: int = 0,
        actor: str = "",
        call_id: str = "",
    ) -> Point:
        """Record the workspace as it is now; returns the new point."""
        with self.repo.locked():
            return self._take(
                session=session, tool=tool, label=label, step=step, actor=actor, call_id=call_id
            )

    def _take(self, **fields: object) -> Point:
        started = time.perf_counter()
        self._ensure()
        head = self._head()
        tree, skipped = self._capture()
        changes = tree_changes(self.repo, head.tree if head else EMPTY_TREE, tree)
        point = Point.model_validate(
            {
                **fields,
                "id": head.id + 1 if head else 1,
                "time": time.time(),
                "changed": changes[:MAX_LISTED_CHANGES],
                "changed_count": len(changes),
                "skipped": skipped[:MAX_LISTED_SKIPS],
                "skipped_count": len(skipped),
            }
        )
        point.duration_ms = round((time.perf_counter() - started) * 1000, 1)
        parents = ["-p", head.commit] if head else []
        commit = (
            self.repo.run("commit-tree", tree, *parents, input=encode_message(point))
            .decode()
            .strip()
        )
        self._set_head(commit)
        self._known[commit] = (tree, point.id)
        return point.model_copy(update={"commit": commit, "tree": tree})

    def _ensure(self) -> None:
        self.repo.ensure()
        if not self.repo.exclude_file.exists():
            self.repo.exclude_file.write_bytes(b"".join(p + b"\n" for p in BASE_EXCLUDES))

    def _capture(self) -> tuple[str, list[Skip]]:
        """Bring the shadow index up to the workspace; returns its tree and what it lacks."""
        raw = self.repo.run(
            "ls-files",
            "-z",
            "-t",
            "-m",
            "-d",
            "-o",
            "--directory",
            "--no-empty-directory",
            f"--exclude-from={self.repo.exclude_file}",
        )
        listed = [(item[:1], item[2:]) for item in raw.split(b"\0") if item]
        plan = plan_capture(os.fsencode(self.repo.workspace), listed)
        if plan.remember:
            self._remember(plan.remember)
        if plan.force_remove:
            self.repo.run(
                "update-index",
                "--force-remove",
                "-z",
                "--stdin",
                input=b"\0".join(plan.force_remove) + b"\0",
            )
        if plan.update:
            self.repo.run(
                "update-index",
                "--add",
                "--remove",
                "--replace",
                "-z",
                "--stdin",
                input=b"\0".join(plan.update) + b"\0",
            )
        tree = self.repo.text("write-tree")
        # A name no exclude pattern can express (a newline in it) is skipped again each time.
        unremembered = [s for s in plan.remember if exclude_pattern(s.path) is None]
        return tree, [*self._remembered(), *plan.skipped, *unremembered]

    def _remembered(self) -> list[Skip]:
        try:
            data = json.loads(self.repo.excluded_json.read_text(encoding="utf-8"))
            return [Skip.model_validate(s) for s in data]
        except (OSError, ValueError):
            return []

    def _remember(self, skips: list[Skip]) -> None:
        """Exclude these paths from every later point (bulk directories, entries over a cap)."""
        known = self._remembered()
        kept = [(s, p) for s in skips if (p := exclude_pattern(s.path)) is not None]
        with open(self.repo.exclude_file, "ab") as fh:
            fh.write(b"".join(p + b"\n" for _, p in kept))
        data = [s.model_dump() for s in [*known, *(s for s, _ in kept)]]
        tmp = self.repo.excluded_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self.repo.excluded_json)

    def _set_head(self, commit: str) -> None:
        """Move the points ref (a loose ref written by rename: the lock is held, and this
        saves a git process per point)."""
        ref = self.repo.git_dir / POINTS_REF
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.repo.git_dir / "points.new"  # not under refs/: never read as a ref
        tmp.write_text(commit + "\n", encoding="ascii")
        tmp.replace(ref)

    def _head(self) -> _Head | None:
        ref = self.repo.git_dir / POINTS_REF
        try:
            commit = ref.read_text().strip()
        except FileNotFoundError:
            out = self.repo.run("rev-parse", "--verify", "-q", POINTS_REF, check=False)
            commit = out.decode().strip()
        if not commit:
            return None
        if commit not in self._known:
            raw = self.repo.run("cat-file", "commit", commit).decode("utf-8", "surrogateescape")
            header, _, message = raw.partition("\n\n")
            tree = header.split("\n", 1)[0].split()[1]
            point = decode_message(message, commit=commit, tree=tree)
            self._known[commit] = (tree, point.id if point else 0)
        tree, point_id = self._known[commit]
        return _Head(commit=commit, tree=tree, id=point_id)

    # -- reading points ----------------------------------------------------------------------

    def points(self, session: str | None = None) -> list[Point]:
        """Every point, oldest first (only ``session``'s when given)."""
        if not self.repo.exists:
            return []
        with self.repo.locked():
            if self._head() is None:
                return []
            raw = self.repo.run("log", "--format=%x1e%H %T%n%B", POINTS_REF)
        out: list[Point] = []
        for record in raw.decode("utf-8", "surrogateescape").split("\x1e")[1:]:
            first, _, message = record.partition("\n")
            commit, tree = first.split()
            point = decode_message(message.strip() + "\n", commit=commit, tree=tree)
            if point is not None and (session is None or point.session == session):
                out.append(point)
        out.reverse()
        return out

    def get(self, point_id: int) -> Point:
        for point in self.points():
            if point.id == point_id:
                return point
        raise PointNotFound(f"no rewind point {point_id} in {self.workspace}")

    # -- going back --------------------------------------------------------------------------

    def preview(self, point_id: int) -> str:
        """The patch restoring ``point_id`` would apply to the workspace as it is now."""
        target = self.get(point_id)
        with self.repo.locked():
            self._ensure()
            current, _ = self._capture()
            return preview(self.repo, current, target.tree)

    def restore(self, point_id: int, *, session: str | None = None) -> RestoreResult:
        """Put the workspace back as it was at ``point_id``, after a point of the present
        (tool ``rewind``, in ``session`` or else the target's session) that undoes it."""
        target = self.get(point_id)
        with self.repo.locked():
            backup = self._take(
                session=session or target.session,
                tool="rewind",
                label=f"before rewinding to point {point_id}",
            )
            changes = apply_tree(self.repo, backup.tree, target.tree)
        return RestoreResult(target=target, backup=backup, changes=changes)


__all__ = ["POINTS_REF", "PointNotFound", "RestoreResult", "RewindError", "RewindStore"]
