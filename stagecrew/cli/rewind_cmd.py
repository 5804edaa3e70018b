"""``crew rewind``: list a session's rewind points, preview or restore one, and optionally
rewind the conversation with the files so ``crew resume`` continues from that point.

The work is ``stagecrew.rewind``'s; this module parses options, finds the session and prints.
Restoring takes a point of the present first and prints its id: ``crew rewind --to`` that id
undoes the rewind. ``--conversation`` appends a ``ConversationRewound`` event to the session's
log (a finished session only: while it runs the supervisor is the log's one writer).
Usage errors are one line on stderr and exit 2, failures exit 1, like the rest of ``crew``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # imported when a command runs: `crew --help` stays light (no pydantic)
    from stagecrew.messages import ConversationRewound, Envelope
    from stagecrew.rewind import Point

EXIT_USAGE = 2
EXIT_FAILED = 1


def register(app: typer.Typer) -> None:
    """Add ``crew rewind`` to the command line."""
    app.command(name="rewind")(rewind)


def rewind(
    session: Annotated[
        str | None,
        typer.Argument(help="Session id (default: the newest session of this workspace)."),
    ] = None,
    list_points_: Annotated[
        bool, typer.Option("--list", help="List the session's points (the default).")
    ] = False,
    to: Annotated[
        int | None, typer.Option("--to", metavar="POINT", help="Restore the files of POINT.")
    ] = None,
    preview: Annotated[
        bool, typer.Option("--preview", help="With --to: print the diff, change nothing.")
    ] = False,
    conversation: Annotated[
        bool,
        typer.Option(
            "--conversation",
            help="With --to: also end the session's transcript at POINT (crew resume "
            "continues from there).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    cwd: Annotated[
        Path | None, typer.Option(help="Workspace directory (default: the current one).")
    ] = None,
) -> None:
    """Rewind the workspace to a point taken before a turn or a mutating tool call."""
    from stagecrew.rewind import PointNotFound, RewindError

    workspace = _workspace(cwd)
    if to is None:
        if preview or conversation:
            raise _fail("--preview and --conversation need --to POINT")
        raise typer.Exit(_list(workspace, session, as_json))
    try:
        if preview:
            raise typer.Exit(_preview(workspace, to, session, as_json))
        raise typer.Exit(_restore(workspace, to, session, conversation, as_json))
    except PointNotFound as exc:
        raise _fail(str(exc).strip("'\"")) from None
    except (RewindError, OSError) as exc:
        raise _fail(f"rewind failed: {exc}", EXIT_FAILED) from None


def _list(workspace: Path, session: str | None, as_json: bool) -> int:
    from stagecrew.rewind import format_points, list_points

    sid = session or _latest_session(workspace)
    if sid is None:
        raise _fail(f"no session in {workspace} (crew run starts one)")
    points = list_points(workspace, sid)
    if as_json:
        print(json.dumps([p.model_dump(mode="json") for p in points], indent=2))
        return 0
    if not points:
        _say(f"session {sid} has no rewind points (plan mode and read-only tools take none)")
        return 0
    _say(f"session {sid}: {len(points)} rewind points (crew rewind --to POINT [--preview])")
    for line in format_points(points):
        print(line)
    skipped = points[-1].skipped
    if skipped:
        more = points[-1].skipped_count - len(skipped)
        names = ", ".join(f"{_shown(s.path)} ({s.reason})" for s in skipped[:5])
        extra = len(skipped) - 5 + more
        _say(f"not in the points: {names}" + (f" and {extra} more" if extra > 0 else ""))
    return 0


def _preview(workspace: Path, point_id: int, session: str | None, as_json: bool) -> int:
    from stagecrew.rewind import preview_point

    _point(workspace, point_id, session)
    diff = preview_point(workspace, point_id)
    if as_json:
        print(json.dumps({"point": point_id, "diff": diff}))
    elif diff:
        sys.stdout.write(diff)
    else:
        _say(f"the workspace already matches point {point_id}: nothing to restore")
    return 0


def _restore(
    workspace: Path, point_id: int, session: str | None, conversation: bool, as_json: bool
) -> int:
    from stagecrew.rewind import describe_restore, restore_point

    point = _point(workspace, point_id, session)
    marker = None
    if conversation:  # checked before any file changes: all or nothing
        from stagecrew.rewind.conversation import ConversationRewindError, rewind_marker

        try:
            marker = rewind_marker(_events(workspace, point.session), point)
        except ConversationRewindError as exc:
            raise _fail(str(exc)) from None
    result = restore_point(workspace, point_id)
    if marker is not None:
        _append(workspace, point.session, marker)
    if as_json:
        out = {
            "point": point_id,
            "backup": result.backup.id,
            "changes": [c.model_dump() for c in result.changes],
            "conversation_seq": marker.to_seq if marker is not None else None,
        }
        print(json.dumps(out))
        return 0
    print(describe_restore(result))
    if marker is not None:
        print(
            f"the conversation of session {point.session} now ends at point {point_id}: "
            f"crew resume {point.session} continues from there"
        )
    return 0


def _point(workspace: Path, point_id: int, session: str | None) -> Point:
    from stagecrew.rewind import PointNotFound, list_points

    point = next((p for p in list_points(workspace) if p.id == point_id), None)
    if point is None:
        raise PointNotFound(f"no rewind point {point_id} in {workspace} (crew rewind --list)")
    if session is not None and point.session != session:
        raise _fail(f"point {point_id} belongs to session {point.session or '(none)'}")
    return point


def _events(workspace: Path, sid: str) -> list[Envelope]:
    from stagecrew.orchestrator.eventlog import read_events, session_dir

    return list(read_events(session_dir(workspace, sid) / "events.jsonl"))


def _append(workspace: Path, sid: str, body: ConversationRewound) -> None:
    from stagecrew.messages import Envelope
    from stagecrew.orchestrator.eventlog import EventLog, session_dir

    log = EventLog(session_dir(workspace, sid) / "events.jsonl")
    try:
        log.append(Envelope(session=sid, sender="person", body=body))
    finally:
        log.close()


def _latest_session(workspace: Path) -> str | None:
    from stagecrew.cli.runner import latest_session

    return latest_session(workspace)


def _workspace(cwd: Path | None) -> Path:
    from stagecrew.cli import preflight

    try:
        return preflight.workspace_for(cwd)
    except preflight.PreflightError as exc:
        raise _fail(str(exc)) from None


def _shown(path: str) -> str:
    """A path for the terminal: bytes that are not UTF-8 become U+FFFD instead of an error."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    sys.stderr.write(f"crew: {message}\n")
    return typer.Exit(code)


__all__ = ["register", "rewind"]
