"""The session's MCP servers as a service actor.

One per session, so the primary and its subagents share the servers instead of starting them
each. The supervisor asks for it when the session starts (the servers come up while the agent
host is being set up) and keeps one spare host warm, unbound, with the SDK imported: binding a
spare to a session costs one Ray call instead of a process start and half a second of imports.
The servers start in parallel; a server that fails is a notice and the session goes on
without it; a server that dies mid-session is restarted once by the manager. ``stop`` ends
every server process, and a killed actor takes them with it (the launcher ties each stdio
server to its parent's life).

Because a spare is created before its session is known, Ray cannot restart this actor with
the right arguments; the supervisor restarts it instead (``services.SessionServices``), once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from stagecrew.envutil import restore_process_env
from stagecrew.mcp.provider import config_from_options
from stagecrew.tools.base import ToolContext


class McpHost:
    def __init__(self) -> None:
        restore_process_env()
        # Imported here, in the spare's idle time, so binding it costs nothing.
        from stagecrew.mcp.client import McpManager, warm_imports

        warm_imports()
        self._manager_cls = McpManager
        self.session = ""
        self.manager: Any = None
        self.ctx: ToolContext | None = None
        self._started: asyncio.Future[list[str]] | None = None
        self._bound = asyncio.Event()
        self.ready_ms: float | None = None

    async def bind(
        self, session: str, workspace: str, session_dir: str, options: dict[str, Any]
    ) -> None:
        """Serve ``session``: its servers start now, in the background."""
        if self.manager is not None:
            raise RuntimeError(f"this MCP host already serves session {self.session}")
        self.session = session
        self.ctx = ToolContext(workspace=Path(workspace), session_dir=Path(session_dir))
        self.manager = self._manager_cls(config_from_options(options), cwd=Path(workspace))
        self._bound.set()
        self._start()

    def _start(self) -> asyncio.Future[list[str]]:
        if self._started is None:
            began = time.monotonic()

            async def run() -> list[str]:
                try:
                    return await self.manager.start()
                finally:
                    self.ready_ms = (time.monotonic() - began) * 1000

            self._started = asyncio.ensure_future(run())
        return self._started

    async def _ready(self) -> None:
        await self._bound.wait()
        await asyncio.shield(self._start())

    def ping(self) -> int:
        import os

        return os.getpid()

    async def ready(self) -> dict[str, Any]:
        """Wait for the servers; how many came up and how long it took (for the log)."""
        await self._ready()
        rows = self.manager.status()
        return {
            "servers": len(rows),
            "running": sum(1 for r in rows if r.status == "running"),
            "ms": round(self.ready_ms or 0.0),
            "notices": list(self.manager.notices),
        }

    async def specs(self) -> list[dict[str, Any]]:
        await self._ready()
        return [
            {
                "name": s.name,
                "description": s.description,
                "parameters": s.parameters,
                "read_only": s.read_only,
                "provider": s.provider,
            }
            for s in self.manager.specs()
        ]

    async def notices(self) -> list[str]:
        await self._ready()
        return list(self.manager.notices)

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        await self._ready()
        assert self.ctx is not None
        result = await self.manager.call(name, arguments, self.ctx)
        return result.model_dump(mode="json")

    async def expand_prompt(self, line: str) -> str | None:
        await self._ready()
        return await self.manager.expand_prompt_command(line)

    async def status(self) -> list[dict[str, Any]]:
        await self._ready()
        return [dataclasses.asdict(row) for row in self.manager.status()]

    async def stop(self) -> None:
        if self.manager is not None:
            await self.manager.stop()
