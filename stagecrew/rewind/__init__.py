"""Rewind: points of the workspace taken before every turn and every mutating tool call, in a
shadow git repository under ``.stagecrew/state/rewind/`` (the person's repository, index,
stash and refs are never written to; a workspace needs no git repository at all).

``store.py`` takes, lists, previews and restores points; ``scan.py`` decides what a point
captures (caps); ``restore.py`` writes a point back; ``recorder.py`` is the agent's side;
``conversation.py`` maps a point to its place in the session log and rewinds the transcript.
A plain library: no ray, no litellm. The functions below are what commands call (``crew
rewind``, ``/rewind`` in the chat).
"""

from __future__ import annotations

from pathlib import Path

from stagecrew.rewind.points import Change, Point, Skip, format_points
from stagecrew.rewind.shadow import RewindError
from stagecrew.rewind.store import PointNotFound, RestoreResult, RewindStore


def list_points(workspace: Path | str, session: str | None = None) -> list[Point]:
    """The points of a workspace, oldest first (one session's when ``session`` is given)."""
    return RewindStore(workspace).points(session)


def preview_point(workspace: Path | str, point_id: int) -> str:
    """The diff restoring ``point_id`` would apply to the workspace as it is now."""
    return RewindStore(workspace).preview(point_id)


def restore_point(
    workspace: Path | str, point_id: int, *, session: str | None = None
) -> RestoreResult:
    """Restore the files of ``point_id``; the result's ``backup`` point undoes it."""
    return RewindStore(workspace).restore(point_id, session=session)


def take_point(workspace: Path | str, *, session: str, tool: str, label: str) -> Point:
    """A point taken outside an agent's loop (Max Mode and cluster patches before applying)."""
    return RewindStore(workspace).take(session=session, tool=tool, label=label)


def describe_restore(result: RestoreResult) -> str:
    """What a rewind did, in one line a person can act on (how to undo it included)."""
    count = len(result.changes)
    files = "file" if count == 1 else "files"
    return (
        f"rewound to point {result.target.id}: {count} {files} changed; the tree before is "
        f"point {result.backup.id} (crew rewind --to {result.backup.id} undoes this)"
    )


__all__ = [
    "Change",
    "Point",
    "PointNotFound",
    "RestoreResult",
    "RewindError",
    "RewindStore",
    "Skip",
    "describe_restore",
    "format_points",
    "list_points",
    "preview_point",
    "restore_point",
    "take_point",
]
