"""The event hub: open sessions, their logs, and the followers waiting on them.

The supervisor is the only writer of a session's ``events.jsonl``; everything it or an actor
reports goes through ``emit``/``post`` here, in arrival order, so the log order is the one
order. Followers (the CLI's ``follow`` stream, ``crew attach``) wait on the session's
condition and read the lines kept in memory since the supervisor opened the log.
Max Mode, the watchdog and recovery use this interface, never the supervisor's insides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from stagecrew.actors.spec import AgentResult, AgentSpec
from stagecrew.messages import Envelope, Message
from stagecrew.orchestrator.eventlog import EventLog


class SessionLimits:
    """Budgets for a whole session, across every actor in it."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.wall_time_s: float | None = data.get("wall_time_s")
        self.max_tokens: int | None = data.get("max_tokens")
        self.max_cost_usd: float | None = data.get("max_cost_usd")
        self.heartbeat_timeout_s: float = float(data.get("heartbeat_timeout_s") or 30.0)


@dataclass
class SessionRuntime:
    session: str
    workspace: str
    log: EventLog
    lines: list[str] = field(default_factory=list)
    first_seq: int = 1
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    finished: bool = False
    finishing: bool = False  # its stop record is being written (set once, first thing)
    started_at: float = field(default_factory=time.time)
    primary: str | None = None
    prompt: str = ""
    limits: SessionLimits = field(default_factory=SessionLimits)
    # Interactive sessions outlive each agent run: a run ends its turn, the person writes
    # again, and the next run continues the same transcript.
    interactive: bool = False
    transcript: list[dict[str, Any]] = field(default_factory=list)
    turn: int = 0
    last_result: AgentResult | None = None
    spec: AgentSpec | None = None
    stopping: str | None = None
    # Keys the session's models need, kept in memory only: a restarted gateway asks for them.
    credentials: dict[str, str] = field(default_factory=dict)
    # Work placed on another node: where, on which clone, from which commit.
    remote_node: str | None = None
    remote_path: str | None = None
    remote_base: str | None = None
    # Automatic resumes after a dead agent host: how many were made, how many may be.
    auto_resumes: int = 0
    auto_resume_limit: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "workspace": self.workspace,
            "finished": self.finished,
            "elapsed_s": round(time.time() - self.started_at, 1),
            "prompt": self.prompt[:80],
        }


def _has_news(session: SessionRuntime, index: int) -> bool:
    return session.finished or index < len(session.lines)


class EventHub:
    """Sessions by id, and the one way to append to their logs."""

    def __init__(self, track: Callable[[Message], None]) -> None:
        self.sessions: dict[str, SessionRuntime] = {}
        self._track = track

    def get(self, sid: str) -> SessionRuntime | None:
        return self.sessions.get(sid)

    def open(self, session: SessionRuntime) -> SessionRuntime:
        self.sessions[session.session] = session
        return session

    def unfinished(self) -> list[SessionRuntime]:
        return [s for s in self.sessions.values() if not s.finished]

    def log_now(self, session: SessionRuntime, body: Message, sender: str = "supervisor") -> None:
        """Append one of the supervisor's own messages without waking followers (for
        synchronous paths such as recovery; ``emit`` wakes them)."""
        self._track(body)
        self._append(
            session, Envelope(session=session.session, sender=sender, recipient="*", body=body)
        )

    async def emit(
        self, session: SessionRuntime, body: Message, sender: str = "supervisor"
    ) -> None:
        self.log_now(session, body, sender)
        await self.notify(session)

    async def post(self, envelopes: list[Envelope]) -> None:
        """What actors report: logged in arrival order, then streamed to followers."""
        touched: set[str] = set()
        for env in envelopes:
            session = self.sessions.get(env.session)
            if session is None or session.finished:
                continue
            self._track(env.body)
            self._append(session, env)
            touched.add(session.session)
        for sid in touched:
            await self.notify(self.sessions[sid])

    def _append(self, session: SessionRuntime, env: Envelope) -> None:
        session.log.append(env)
        session.lines.append(env.to_json())

    async def notify(self, session: SessionRuntime) -> None:
        async with session.changed:
            session.changed.notify_all()

    async def close(self, session: SessionRuntime) -> None:
        """The session's last line is written: close the log, release its followers."""
        session.finished = True
        session.log.close()
        await self.notify(session)

    async def follow(self, sid: str, after_seq: int) -> AsyncIterator[list[str]]:
        """Batches of log lines after ``after_seq``, live, until the session is finished."""
        session = self.sessions[sid]
        index = max(0, after_seq - session.first_seq + 1)
        while True:
            if index < len(session.lines):
                batch = session.lines[index:]
                index += len(batch)
                yield batch
                continue
            if session.finished:
                return
            async with session.changed:
                await session.changed.wait_for(partial(_has_news, session, index))
