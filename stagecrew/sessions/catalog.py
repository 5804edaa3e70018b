"""A project's past sessions: what each one was, found from the event logs alone.

Every session is a directory ``.stagecrew/state/sessions/<id>/`` with its ``events.jsonl``
(``stagecrew.layout``). A summary reads one log: the title is the first line of the first
prompt, the cost and tokens add up every ``model_usage`` event (subagents, judge and
candidates included), the duration adds up each run (a resume is a new run in the same log;
a run without a stop record lasted until its last event) and the stop reason is the last
run's stop record. A log whose last run has no stop record belongs to a session that is still
running or was killed before anything could write one: the summary says ``None`` and leaves
telling those apart to whoever can ask the supervisor.

A fork's log starts with its source's events (``sessions/fork.py``); its summary counts from
the fork's notice on (start, duration, cost, runs), while the title and the step numbers are
the transcript's, copied part included.

Sessions are listed most recently active first (the log's modification time, as ``crew
resume`` picks "the latest"), and only the ones shown are read in full.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stagecrew.layout import session_log, sessions_dir
from stagecrew.messages import (
    Envelope,
    ModelUsage,
    SessionFinished,
    SessionStarted,
    UserInput,
)
from stagecrew.orchestrator.eventlog import read_events
from stagecrew.sessions.events import shorten
from stagecrew.sessions.origin import fork_origin
from stagecrew.sessions.transcript import StepCounter

TITLE_WIDTH = 60


class SessionLookupError(Exception):
    """No session, or more than one, answers to what the person typed; says which."""


@dataclass
class SessionSummary:
    """One line of ``crew sessions``. ``stop_reason`` is None when the last run has no stop
    record (running, or killed before one was written)."""

    id: str
    title: str
    started: float | None
    duration_s: float
    agent: str
    model: str
    stop_reason: str | None
    cost_usd: float
    tokens: int
    steps: int
    runs: int
    forked_from: str | None
    log: Path

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "started": self.started,
            "duration_s": round(self.duration_s, 3),
            "agent": self.agent,
            "model": self.model,
            "stop_reason": self.stop_reason,
            "cost_usd": round(self.cost_usd, 6),
            "tokens": self.tokens,
            "steps": self.steps,
            "runs": self.runs,
            "forked_from": self.forked_from,
            "log": str(self.log),
        }


def title_of(prompt: str) -> str:
    """The first non-empty line of a prompt, shortened for a listing."""
    first = next((line for line in prompt.splitlines() if line.strip()), "")
    return shorten(first, TITLE_WIDTH)


def summarize(session: str, envelopes: Iterable[Envelope], log: Path) -> SessionSummary:
    """The summary of one session from its envelopes (see the module docstring)."""
    title, agent, model = "", "", ""
    started: float | None = None
    run_start: float | None = None
    run_last = 0.0
    duration = 0.0
    cost, tokens, steps, runs = 0.0, 0, 0, 0
    stop: str | None = None
    forked_from: str | None = None
    counter = StepCounter()
    for env in envelopes:
        body = env.body
        steps = counter.feed(env) or steps
        if started is None:
            started = env.ts
        if isinstance(body, SessionStarted):
            if run_start is not None:  # the run before never wrote a stop record
                duration += max(0.0, run_last - run_start)
            runs += 1
            run_start, stop = env.ts, None
            if runs == 1:
                agent, model = body.profile, body.model
            if not title and body.prompt.strip():
                title = title_of(body.prompt)
        elif isinstance(body, UserInput) and not title:
            title = title_of(body.text)
        elif isinstance(body, ModelUsage):
            cost += body.usage.cost_usd
            tokens += body.usage.total_tokens
        elif isinstance(body, SessionFinished):
            stop = body.stop_reason.value
            if run_start is not None:
                duration += max(0.0, env.ts - run_start)
            run_start = None
        elif forked_from is None and (origin := fork_origin(env)):
            # A fork's own session starts here: what came before is the source's, copied.
            forked_from, started, run_start = origin, env.ts, None
            duration, cost, tokens, runs = 0.0, 0.0, 0, 0
        run_last = env.ts
    if run_start is not None:
        duration += max(0.0, run_last - run_start)
    return SessionSummary(
        id=session,
        title=title,
        started=started,
        duration_s=duration,
        agent=agent,
        model=model,
        stop_reason=stop,
        cost_usd=cost,
        tokens=tokens,
        steps=steps,
        runs=runs,
        forked_from=forked_from,
        log=log,
    )


def session_ids(workspace: Path) -> list[str]:
    """Every session of the project that has a log, the most recently active first."""
    root = sessions_dir(workspace)
    stamped: list[tuple[float, str]] = []
    try:
        for d in root.iterdir():
            with contextlib.suppress(OSError):
                log = d / "events.jsonl"
                if log.stat().st_size > 0:
                    stamped.append((log.stat().st_mtime, d.name))
    except OSError:
        return []
    return [sid for _, sid in sorted(stamped, reverse=True)]


def load_summary(workspace: Path, session: str) -> SessionSummary:
    log = session_log(workspace, session)
    return summarize(session, read_events(log), log)


def list_sessions(workspace: Path, limit: int | None = None) -> list[SessionSummary]:
    """The project's sessions, newest first; ``limit`` None means all of them."""
    ids = session_ids(workspace)
    if limit is not None:
        ids = ids[:limit]
    return [load_summary(workspace, sid) for sid in ids]


def resolve_session(workspace: Path, prefix: str) -> str:
    """The session id that ``prefix`` starts (a whole id, or enough of one to be unique)."""
    prefix = prefix.strip()
    if not prefix:
        raise SessionLookupError("no session id given")
    if session_log(workspace, prefix).is_file():
        return prefix
    matches = [sid for sid in session_ids(workspace) if sid.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SessionLookupError(
            f"no session '{prefix}' in {workspace} (crew sessions lists them; run it from the "
            "session's project directory)"
        )
    shown = ", ".join(matches[:5]) + (" …" if len(matches) > 5 else "")
    raise SessionLookupError(f"'{prefix}' matches {len(matches)} sessions: {shown}")
