"""The session's MCP servers as a service actor.

One per session (created when its first agent builds its tools), so the primary and its
subagents share the servers instead of starting them each. The servers start in parallel on
first use; a server that fails is a notice and the session goes on without it; a server that
dies mid-session is restarted once by the manager. ``stop`` ends every server process, and a
killed actor takes them with it (the launcher ties each stdio server to its parent's life).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from stagecrew.envutil import restore_process_env
from stagecrew.mcp.provider import config_from_options
from stagecrew.tools.base import ToolContext


class McpHost:
    def __init__(
        self,
        session: str,
        workspace: str,
        session_dir: str,
        gateways: list[Any],
        options: dict[str, Any],
    ) -> None:
        restore_process_env()
        from stagecrew.mcp.client import McpManager

        self.session = session
        self.ctx = ToolContext(workspace=Path(workspace), session_dir=Path(session_dir))
        self.manager = McpManager(config_from_options(options), cwd=Path(workspace))
        self._started: asyncio.Task[list[str]] | None = None

    async def _ready(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self.manager.start())
        await asyncio.shield(self._started)

    def ping(self) -> int:
        import os

        return os.getpid()

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
        result = await self.manager.call(name, arguments, self.ctx)
        return result.model_dump(mode="json")

    async def expand_prompt(self, line: str) -> str | None:
        await self._ready()
        return await self.manager.expand_prompt_command(line)

    async def status(self) -> list[dict[str, Any]]:
        await self._ready()
        return [dataclasses.asdict(row) for row in self.manager.status()]

    async def stop(self) -> None:
        await self.manager.stop()
