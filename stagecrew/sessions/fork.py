"""``crew fork``: a new session that starts from a point of another one's transcript.

A fork is made the way a resume is, with one difference: the session is new. The source's
log up to the end of step N (the primary's N-th turn, its tool results and whatever ran while
they did: subagents, hooks, notices) is copied into the new session's ``events.jsonl`` under
the new id, followed by a notice saying where it came from. The new session then starts
exactly as ``crew resume`` would start that log (``actors.context.resumed_spec``: the
transcript from the log, the person's new words, the context rebuilt from memory), so the
model sees the conversation up to step N and nothing after, and ``crew show``, ``crew
resume`` and another ``crew fork`` of the new session all work on its own log.

The copy is written before the supervisor opens the session (it then appends to it, as it
does for a resume); it is the only log line the CLI writes. The source's memory files are
not copied: its checkpoint, notes and task tree describe its end, not step N.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stagecrew.layout import session_dir, session_log
from stagecrew.messages import (
    AssistantMessage,
    Envelope,
    HookRan,
    Notice,
    SessionStarted,
    TaskTreeChanged,
    ToolFinished,
    UserInput,
)
from stagecrew.orchestrator.eventlog import EventLog, ensure_state_ignored, read_events
from stagecrew.sessions.origin import fork_sender
from stagecrew.sessions.transcript import StepCounter

if TYPE_CHECKING:
    from stagecrew.actors.context import RebuildReport
    from stagecrew.actors.spec import AgentSpec

# What may follow a step's last tool result and still belong to it (a PostToolUse hook, the
# task tree it changed, a notice about it); anything else starts what comes next.
_TRAILING = (HookRan, TaskTreeChanged, Notice)


class ForkError(Exception):
    """The fork cannot be made as asked; the message says why and what would work."""


@dataclass
class ForkPoint:
    """Where a fork starts: after ``step`` of ``steps`` in ``source``, whose log up to there
    is ``envelopes``."""

    source: str
    step: int
    steps: int
    envelopes: list[Envelope]


def _end_of_step(envelopes: list[Envelope], index: int, counter: StepCounter) -> int:
    """The index of the last envelope of the step whose turn is ``envelopes[index]``."""
    turn = envelopes[index].body
    assert isinstance(turn, AssistantMessage)
    pending = {call.id for call in turn.tool_calls}
    end = index
    for k in range(index + 1, len(envelopes)):
        body = envelopes[k].body
        starts_next = isinstance(body, SessionStarted | UserInput) or (
            isinstance(body, AssistantMessage) and body.actor_id in counter.primaries
        )
        if starts_next:
            break
        if pending:
            if isinstance(body, ToolFinished) and body.call_id in pending:
                pending.discard(body.call_id)
                end = k
        elif isinstance(body, _TRAILING):
            end = k
        else:
            break
    return end


def fork_point(workspace: Path, source: str, at: int | None) -> ForkPoint:
    """The source's log cut after step ``at`` (None: the whole log)."""
    envelopes = list(read_events(session_log(workspace, source)))
    if not envelopes:
        raise ForkError(f"session {source} has an empty log: nothing to fork")
    counter = StepCounter()
    turns: dict[int, int] = {}
    for i, env in enumerate(envelopes):
        step = counter.feed(env)
        if step is not None:
            turns[step] = i
    steps = counter.steps
    if at is None:
        return ForkPoint(source, steps, steps, envelopes)
    if not 1 <= at <= steps:
        have = f"steps 1 to {steps}" if steps else "no steps yet"
        raise ForkError(f"session {source} has {have} (crew show {source} numbers them)")
    # The counter's primaries after the whole log: a step ends at the next primary turn.
    end = _end_of_step(envelopes, turns[at], counter)
    return ForkPoint(source, at, steps, envelopes[: end + 1])


def seed_fork(workspace: Path, point: ForkPoint, session: str) -> Path:
    """Write the new session's log: the source's envelopes under ``session``, then the notice
    of where it came from. Returns the log's path."""
    path = session_log(workspace, session)
    if path.exists():
        raise ForkError(f"session {session} already exists")
    ensure_state_ignored(workspace)
    log = EventLog(path)
    try:
        for env in point.envelopes:
            log.append(env.model_copy(update={"session": session}))
        text = f"forked from session {point.source} at step {point.step} of {point.steps}"
        log.append(
            Envelope(
                session=session,
                sender=fork_sender(point.source, point.step),
                body=Notice(level="info", text=text),
            )
        )
    finally:
        log.close()
    return path


def forked_spec(
    spec: AgentSpec, workspace: Path, prompt: str | None
) -> tuple[AgentSpec, RebuildReport, int]:
    """The first run of a seeded fork: ``spec`` is a fresh spec for the new session (from
    ``prepare_session`` with its id); returns the spec, the rebuild report and how many
    transcript messages came from the log."""
    from stagecrew.actors.context import history_from_events, resumed_spec

    history = history_from_events(read_events(session_log(workspace, spec.session)))
    spec = spec.model_copy(update={"session_dir": str(session_dir(workspace, spec.session))})
    resumed, report = resumed_spec(spec, history, prompt)
    return resumed, report, len(history.messages)


def source_profile(point: ForkPoint) -> str | None:
    """The agent profile the source started with (a fork continues with it by default)."""
    for env in point.envelopes:
        if isinstance(env.body, SessionStarted):
            return env.body.profile
    return None
