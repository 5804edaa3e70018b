"""The actor tree: who runs, for which session, under which parent, in which state.

Plain bookkeeping (no Ray calls): the supervisor adds records as it spawns, the event hub
keeps their numbers current from the envelopes flowing through, the watchdog and cancel walk
it. A record's ``done`` event is set exactly once, when its ending has been logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stagecrew.actors.spec import AgentResult, AgentSpec
from stagecrew.messages import (
    ActorState,
    ActorStateChanged,
    Heartbeat,
    Message,
    ModelUsage,
)

# How long a cancelled actor has to stop before it is killed.
CANCEL_GRACE_S = 3.0


@dataclass
class ActorRecord:
    actor_id: str
    session: str
    role: str
    parent: str | None
    handle: Any
    spec: AgentSpec | None = None
    description: str = ""
    state: ActorState = ActorState.PENDING
    started_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)
    steps: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    model: str = ""
    pid: int | None = None
    result: AgentResult | None = None
    stopping: str | None = None  # why the supervisor is stopping it (set once)
    kill_detail: str = ""  # what a kill on purpose (crew kill, crew down) says in the log
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def live(self) -> bool:
        return not self.state.terminal and self.handle is not None

    def row(self) -> dict[str, Any]:
        return {
            "actor_id": self.actor_id,
            "session": self.session,
            "role": self.role,
            "parent": self.parent,
            "state": self.state.value,
            "elapsed_s": round(time.time() - self.started_at, 1),
            "steps": self.steps,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "rss_bytes": self.rss_bytes,
            "cpu_percent": self.cpu_percent,
            "model": self.model,
            "pid": self.pid,
            "description": self.description,
        }


class ActorTree:
    def __init__(self) -> None:
        self._records: dict[str, ActorRecord] = {}

    def add(self, record: ActorRecord) -> ActorRecord:
        self._records[record.actor_id] = record
        return record

    def get(self, actor_id: str | None) -> ActorRecord | None:
        return self._records.get(actor_id or "")

    def __contains__(self, actor_id: object) -> bool:
        return actor_id in self._records

    def __getitem__(self, actor_id: str) -> ActorRecord:
        return self._records[actor_id]

    def __iter__(self) -> Iterator[ActorRecord]:
        return iter(list(self._records.values()))

    def of_session(self, session: str) -> list[ActorRecord]:
        return [r for r in self._records.values() if r.session == session]

    def descendants(self, actor_id: str) -> list[str]:
        out: list[str] = []
        frontier = [actor_id]
        while frontier:
            cur = frontier.pop()
            kids = [a.actor_id for a in self._records.values() if a.parent == cur]
            out.extend(kids)
            frontier.extend(kids)
        return out

    def depth(self, actor_id: str) -> int:
        depth, cur = 0, self._records.get(actor_id)
        while cur is not None and cur.parent:
            depth += 1
            cur = self._records.get(cur.parent)
        return depth

    def usage(self, session: str) -> tuple[int, float]:
        """Tokens and cost of every actor of the session (subagents and services included)."""
        records = self.of_session(session)
        return sum(r.tokens for r in records), sum(r.cost_usd for r in records)

    def rows(self, session: str | None = None) -> list[dict[str, Any]]:
        return [r.row() for r in self._records.values() if session is None or r.session == session]

    def track(self, body: Message) -> None:
        """Keep the numbers current from the events flowing through."""
        actor_id = getattr(body, "actor_id", None)
        record = self._records.get(actor_id) if actor_id else None
        if record is None:
            return
        if isinstance(body, Heartbeat):
            record.last_heartbeat = time.time()
            record.steps = body.steps
            record.rss_bytes, record.cpu_percent = body.rss_bytes, body.cpu_percent
        elif isinstance(body, ModelUsage):
            record.last_heartbeat = time.time()
            record.tokens += body.usage.total_tokens
            record.cost_usd += body.usage.cost_usd
        elif isinstance(body, ActorStateChanged):
            record.state = body.state
