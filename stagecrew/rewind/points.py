"""A rewind point: what it records, how it is stored in its commit, and how it reads in a list.

A point is a commit of the shadow repository whose message is one subject line (for ``git log``
readers) and a JSON body with everything ``crew rewind --list`` shows: the session and actor
that took it, the step, the tool about to run (``turn`` for the start of a turn), a short
label, the time, the files changed since the previous point and what the point leaves out.
Keeping the metadata in the commit makes the repository the one source of truth: no index
file to fall out of step with it after a crash.
"""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import BaseModel, ConfigDict

# What a point's metadata keeps of long lists (the counts stay exact).
MAX_LISTED_CHANGES = 200
MAX_LISTED_SKIPS = 100

TURN = "turn"  # the ``tool`` of a point taken before a turn of the primary agent


class Change(BaseModel):
    """One path that differs between two points: ``A``dded, ``M``odified, ``D``eleted or
    ``T`` (type changed: file <-> symlink)."""

    model_config = ConfigDict(frozen=True)

    status: str
    path: str


class Skip(BaseModel):
    """A path the point does not hold, and why (a size cap, a bulk directory, a nested
    repository)."""

    model_config = ConfigDict(frozen=True)

    path: str
    reason: str


class Point(BaseModel):
    """A rewind point. ``commit`` and ``tree`` are filled in when read back from git."""

    model_config = ConfigDict(extra="ignore")

    id: int
    session: str = ""
    actor: str = ""
    step: int = 0
    tool: str = TURN
    call_id: str = ""
    label: str = ""
    time: float = 0.0
    changed: list[Change] = []
    changed_count: int = 0
    skipped: list[Skip] = []
    skipped_count: int = 0
    duration_ms: float = 0.0
    commit: str = ""
    tree: str = ""

    @property
    def is_turn(self) -> bool:
        return self.tool == TURN


def encode_message(point: Point) -> bytes:
    """The commit message of a point: a one-line subject, a blank line, the JSON metadata."""
    subject = f"point {point.id}: {point.tool} {' '.join(point.label.split())}"[:200]
    # json.dumps, not pydantic's serializer: a path that is not UTF-8 is carried as surrogate
    # escapes, which only the standard library writes (as \udcXX) and reads back.
    body = json.dumps(point.model_dump(exclude={"commit", "tree"}))
    return f"{subject}\n\n{body}\n".encode("utf-8", errors="surrogateescape")


def decode_message(message: str, *, commit: str, tree: str) -> Point | None:
    """A point from its commit message (None for a commit that is not one of ours)."""
    _, _, body = message.partition("\n\n")
    try:
        data = json.loads(body)
        return Point.model_validate({**data, "commit": commit, "tree": tree})
    except ValueError:
        return None


def summarise_changes(point: Point) -> str:
    """``+1 ~2 -1`` (added, modified, deleted) for a list column; ``-`` for none."""
    if not point.changed_count:
        return "-"
    counts = {"A": 0, "M": 0, "D": 0}
    for change in point.changed:
        key = "M" if change.status not in counts else change.status
        counts[key] += 1
    unlisted = point.changed_count - len(point.changed)
    parts = [f"+{counts['A']}", f"~{counts['M'] + unlisted}", f"-{counts['D']}"]
    return " ".join(p for p in parts if p[1:] != "0") or "-"


def format_points(points: list[Point]) -> list[str]:
    """The rows of ``crew rewind --list`` (and ``/rewind`` in the chat), oldest first: id,
    step, what was about to run, files changed since the previous point, time."""
    rows = [("POINT", "STEP", "BEFORE", "CHANGED SINCE PREVIOUS", "TIME")]
    for p in points:
        what = p.tool if not p.label else f"{p.tool}: {p.label}"
        when = datetime.fromtimestamp(p.time).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((str(p.id), str(p.step), _cut(what, 60), summarise_changes(p), when))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4] for r in rows
    ]


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "MAX_LISTED_CHANGES",
    "MAX_LISTED_SKIPS",
    "TURN",
    "Change",
    "Point",
    "Skip",
    "decode_message",
    "encode_message",
    "format_points",
    "summarise_changes",
]
