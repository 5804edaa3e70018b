"""Recovery: every session a dead supervisor left running gets its ending, and nothing of
the dead tree keeps running.

Plain functions over the logs and the process table (no Ray), so the supervisor runs them at
start, before it answers anyone, and ``crew down`` runs them when the supervisor it would
have asked is already gone. A session is indexed in ``sessions.jsonl`` (state home) when it
opens; one whose log does not end with ``session_finished`` was cut off. Its actors that
never logged an ending get ``ActorFailed`` and the session ``SessionFinished(error)`` naming
``crew resume``, so every log ends with a stop record whoever ended it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from stagecrew.messages import (
    ActorFailed,
    ActorFinished,
    ActorStarted,
    ActorState,
    ActorStateChanged,
    Envelope,
    SessionFinished,
    SessionStarted,
    StopReason,
)
from stagecrew.orchestrator.eventlog import EventLog, last_kind, read_events, session_dir
from stagecrew.orchestrator.names import HEAD_ID_VAR
from stagecrew.orchestrator.procs import kill_actor_processes, same_head_process, terminate

INDEX_FILE = "sessions.jsonl"


def index_session(state_home: Path, sid: str, workspace: str, cluster: str) -> None:
    """Remember where a session's log is, so a later supervisor can find it."""
    state_home.mkdir(parents=True, exist_ok=True)
    entry = {"session": sid, "workspace": workspace, "cluster": cluster, "ts": time.time()}
    with open(state_home / INDEX_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def indexed_sessions(state_home: Path, cluster: str) -> dict[str, str]:
    """session id -> workspace, for the sessions opened on this cluster."""
    try:
        lines = (state_home / INDEX_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    seen: dict[str, str] = {}
    for line in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(line)
            if entry.get("cluster", "") == cluster:
                seen[entry["session"]] = entry["workspace"]
    return seen


@dataclass
class OrphanActor:
    actor_id: str
    role: str
    parent: str | None
    model: str
    pid: int | None
    started_at: float
    state: ActorState = ActorState.RUNNING


@dataclass
class CutOffSession:
    """A session whose log has no ending: what it was, and which actors were still running."""

    session: str
    workspace: str
    log_path: Path
    prompt: str = ""
    started_at: float = 0.0
    actors: dict[str, OrphanActor] = field(default_factory=dict)

    @property
    def running(self) -> list[OrphanActor]:
        return [a for a in self.actors.values() if not a.state.terminal]


def replay(sid: str, workspace: str, events: Iterable[Envelope]) -> CutOffSession:
    cut = CutOffSession(sid, workspace, session_dir(workspace, sid) / "events.jsonl")
    for env in events:
        body = env.body
        if isinstance(body, SessionStarted):
            cut.prompt, cut.started_at = body.prompt, env.ts
        elif isinstance(body, ActorStarted):
            cut.actors[body.actor_id] = OrphanActor(
                body.actor_id, body.role.value, body.parent, body.model or "", body.pid, env.ts
            )
        elif isinstance(body, ActorStateChanged) and body.actor_id in cut.actors:
            cut.actors[body.actor_id].state = body.state
        elif isinstance(body, ActorFinished | ActorFailed) and body.actor_id in cut.actors:
            actor = cut.actors[body.actor_id]
            if not actor.state.terminal:
                failed = isinstance(body, ActorFailed)
                actor.state = ActorState.FAILED if failed else ActorState.FINISHED
    return cut


def cut_off_sessions(state_home: Path, cluster: str) -> list[CutOffSession]:
    """Every indexed session of this cluster whose log lacks its ending."""
    out = []
    for sid, workspace in indexed_sessions(state_home, cluster).items():
        path = session_dir(workspace, sid) / "events.jsonl"
        if not path.exists() or last_kind(path) in (None, "session_finished"):
            continue
        out.append(replay(sid, workspace, read_events(path)))
    return out


def end_log(cut: CutOffSession, actor_error: str, session_error: str, cause: str) -> list[Envelope]:
    """Append the missing endings to the session's log; returns what was written."""
    log = EventLog(cut.log_path)
    written = []
    try:
        for actor in cut.running:
            actor.state = ActorState.FAILED
            body = ActorFailed(actor_id=actor.actor_id, error=actor_error, cause=cause)
            written.append(
                log.append(Envelope(session=cut.session, sender="supervisor", body=body))
            )
        final = SessionFinished(
            stop_reason=StopReason.ERROR,
            error=f"{session_error}; `crew resume {cut.session}` continues it",
            duration_s=round(max(0.0, time.time() - cut.started_at), 3) if cut.started_at else 0.0,
        )
        written.append(log.append(Envelope(session=cut.session, sender="supervisor", body=final)))
    finally:
        log.close()
    return written


def sweep(cut_off: list[CutOffSession], head_id: str | None = None) -> list[int]:
    """Kill what the dead tree left: its actors' tool processes (found by the actor id they
    inherit), and agent host processes still alive (checked to be this head's, by pid)."""
    actors = [a for cut in cut_off for a in cut.running]
    pids = kill_actor_processes([a.actor_id for a in actors], grace_s=0.2)
    head_id = head_id or os.environ.get(HEAD_ID_VAR)
    hosts = [
        a.pid
        for a in actors
        if a.pid and a.pid != os.getpid() and same_head_process(a.pid, head_id, a.started_at)
    ]
    return pids + terminate(hosts, grace_s=0.2)


@dataclass
class Ending:
    """What recovery writes, and why: one line for each actor, one for the session."""

    actor_error: str
    session_error: str
    cause: str


SUPERVISOR_RESTART = Ending(
    "died with the supervisor (it restarted)",
    "the supervisor restarted while this session ran",
    "supervisor_restart",
)
HEAD_STOPPED = Ending(
    "stopped with the head (crew down)",
    "crew down stopped the head while this session ran",
    "head_stopped",
)
HEAD_VANISHED = Ending(
    "its Ray head was gone (the machine restarted or the head was killed)",
    "the Ray head this session ran on was gone",
    "head_vanished",
)


def recover(
    state_home: Path, cluster: str, ending: Ending
) -> list[tuple[CutOffSession, list[Envelope]]]:
    """Sweep and end every session this cluster's dead supervisor left running; returns each
    session with the envelopes written to end it."""
    cut_off = cut_off_sessions(state_home, cluster)
    sweep(cut_off)
    return [
        (cut, end_log(cut, ending.actor_error, ending.session_error, ending.cause))
        for cut in cut_off
    ]
