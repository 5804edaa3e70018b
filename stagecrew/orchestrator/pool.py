"""The warm pool of agent hosts: started ahead of need, so a session or a subagent takes a
host in one Ray call instead of a process start.

The pool learns the fan-out people use: each miss raises the target by one (up to
``POOL_MAX``), and ten idle minutes bring it back to the configured size. Hosts are refilled
a moment after a take: starting one costs about a second of CPU, which on two cores would
slow down the very start it is replacing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import ray

from stagecrew.orchestrator.hosts import start_agent_host

REFILL_DELAY_S = 1.5
POOL_MAX = 8
POOL_DECAY_S = 600.0


class HostPool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.target = size
        self.hosts: list[Any] = []
        self.last_take = time.time()
        self._filling: asyncio.Task[None] | None = None

    def refill(self, delay_s: float = 0.0) -> None:
        if self._filling is None or self._filling.done():
            self._filling = asyncio.get_running_loop().create_task(self._fill(delay_s))

    async def _fill(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        while len(self.hosts) < self.target:
            host = start_agent_host()
            try:
                await host.ping.remote()
            except Exception:
                await asyncio.sleep(1.0)
                continue
            self.hosts.append(host)

    def take(self) -> tuple[Any, bool]:
        """A host, and whether it came warm from the pool."""
        self.last_take = time.time()
        if self.hosts:
            host = self.hosts.pop(0)
            self.refill(delay_s=REFILL_DELAY_S)
            return host, True
        self.target = min(POOL_MAX, max(self.target + 1, self.size))
        self.refill(delay_s=REFILL_DELAY_S)
        return start_agent_host(), False

    def shrink_if_idle(self) -> None:
        if self.target > self.size and time.time() - self.last_take > POOL_DECAY_S:
            self.target = self.size
            while len(self.hosts) > self.target:
                with contextlib.suppress(Exception):
                    ray.kill(self.hosts.pop())

    async def pids(self) -> list[int]:
        return [await h.ping.remote() for h in self.hosts]
