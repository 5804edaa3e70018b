"""The session's durable event log: one envelope per JSON line, in ``seq`` order.

The supervisor is the only writer. Lines are flushed as they are written, so a reader (``crew
logs -f``, ``crew attach``, resume) sees everything a crashed process had reported. Secrets are
scrubbed on the way in: any registered secret value found in a line is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from stagecrew.layout import session_dir, state_dir
from stagecrew.messages import Envelope

__all__ = [
    "EventLog",
    "ensure_state_ignored",
    "last_kind",
    "last_seq",
    "read_events",
    "session_dir",
]

REDACTED = "[REDACTED]"
STATE_IGNORE = "# Written by stagecrew: session state (logs, worktrees) is not project files.\n*\n"


def ensure_state_ignored(workspace: Path | str) -> None:
    """Make git ignore ``.stagecrew/state/`` (a self-ignoring ``.gitignore`` inside it).

    Without it the session's own event log, checkpoints and Max Mode worktrees are untracked
    files of the person's repository: they would appear in ``git status`` and in the judge's
    diff as "changes", be copied into every candidate's baseline and captured by rewind
    snapshots. An existing file is left alone.
    """
    state = state_dir(workspace)
    marker = state / ".gitignore"
    if marker.exists():
        return
    try:
        state.mkdir(parents=True, exist_ok=True)
        marker.write_text(STATE_IGNORE, encoding="utf-8")
    except OSError:
        pass


class EventLog:
    def __init__(self, path: Path, secrets: list[str] | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.seq = last_seq(path)
        self._secrets = [s for s in (secrets or []) if len(s) >= 6]
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 — kept open for the session
        if _ends_torn(path):  # a crash mid-line: end it, or the next envelope would fuse with it
            self._fh.write("\n")
            self._fh.flush()

    def append(self, envelope: Envelope) -> Envelope:
        self.seq += 1
        envelope.seq = self.seq
        line = envelope.to_json()
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        self._fh.write(line + "\n")
        self._fh.flush()
        return envelope

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()


def _ends_torn(path: Path) -> bool:
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def _tail_lines(path: Path, size: int = 65536) -> list[bytes]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        fh.seek(max(0, end - size))
        return fh.read().splitlines()


def last_seq(path: Path) -> int:
    """The highest seq in an existing log (resumed sessions keep counting)."""
    for raw in reversed(_tail_lines(path)):
        try:
            return int(json.loads(raw)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def last_kind(path: Path) -> str | None:
    """The ``kind`` of the log's last well-formed envelope (cheap: reads the tail only)."""
    for raw in reversed(_tail_lines(path)):
        try:
            return str(json.loads(raw)["body"]["kind"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def read_events(path: Path, after_seq: int = 0) -> Iterator[Envelope]:
    """Every well-formed envelope after ``after_seq``; a torn last line is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                env = Envelope.from_json(line)
            except ValueError:
                continue
            if env.seq > after_seq:
                yield env
