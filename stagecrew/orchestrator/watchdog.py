"""The watchdog: limits that no agent enforces on itself.

Every half second: an agent without a heartbeat for the session's timeout is killed (a hung
process cannot cancel itself); an agent past its wall time is cancelled with ``timeout``; a
session past its token, cost or wall-time budget is cancelled whole with ``budget`` or
``timeout``. Steps, tokens and cost per agent are also checked inside the loop between steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from stagecrew.messages import StopReason
from stagecrew.orchestrator.sessions import EventHub, SessionRuntime
from stagecrew.orchestrator.tree import ActorRecord, ActorTree

WATCHDOG_EVERY_S = 0.5
Cancel = Callable[..., Awaitable[list[str]]]
Kill = Callable[[ActorRecord], Awaitable[None]]


class Watchdog:
    def __init__(
        self,
        tree: ActorTree,
        hub: EventHub,
        cancel: Cancel,
        kill: Kill,
        also: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.tree = tree
        self.hub = hub
        self.cancel = cancel
        self.kill = kill
        self.also = also  # other periodic upkeep (the pool's shrink, the gateways' health)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_EVERY_S)
            with contextlib.suppress(Exception):
                if self.also is not None:
                    await self.also()
            with contextlib.suppress(Exception):
                await self.check()

    async def check(self) -> None:
        now = time.time()
        for session in self.hub.unfinished():
            live = [a for a in self.tree.of_session(session.session) if a.live]
            for record in live:
                await self._check_actor(session, record, now)
            if not session.stopping and live:
                await self._check_session(session, now)

    async def _check_actor(self, session: SessionRuntime, record: ActorRecord, now: float) -> None:
        if record.stopping or record.spec is None:  # services do not heartbeat
            return
        if now - record.last_heartbeat > session.limits.heartbeat_timeout_s:
            record.stopping = "heartbeat"
            await self.kill(record)
        elif now - record.started_at > record.spec.wall_time_s:
            await self.cancel(
                record.actor_id,
                reason=StopReason.TIMEOUT.value,
                detail=f"ran longer than its wall-time limit of {record.spec.wall_time_s:g} s",
            )

    async def _check_session(self, session: SessionRuntime, now: float) -> None:
        lim = session.limits
        tokens, cost = self.tree.usage(session.session)
        why: tuple[str, str] | None = None
        if lim.max_tokens is not None and tokens >= lim.max_tokens:
            why = ("budget", f"the session used {tokens} tokens (limit {lim.max_tokens})")
        elif lim.max_cost_usd is not None and cost >= lim.max_cost_usd:
            why = ("budget", f"the session spent ${cost:.4f} (limit ${lim.max_cost_usd:g})")
        elif lim.wall_time_s is not None and now - session.started_at > lim.wall_time_s:
            why = ("timeout", f"the session ran longer than {lim.wall_time_s:g} s")
        if why:
            session.stopping = why[0]
            await self.cancel(session.session, reason=why[0], detail=why[1])
