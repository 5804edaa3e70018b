"""A stand-in for an agent process: start the MCP servers given as JSON on argv[1], print the
pids of every process below this one, then wait to be killed (tests kill it with SIGKILL)."""

from __future__ import annotations

import asyncio
import json
import sys

import psutil

from stagecrew.mcp import McpLayer, McpManager, build_mcp_config


async def main() -> None:
    servers = json.loads(sys.argv[1])
    config = build_mcp_config([McpLayer("holder", "mcp.json", {"mcpServers": servers})])
    manager = McpManager(config)
    await manager.start()
    await asyncio.sleep(0.5)  # let wrapper scripts spawn their real server
    pids = [p.pid for p in psutil.Process().children(recursive=True)]
    print(json.dumps({"pids": pids, "status": [r.status for r in manager.status()]}), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
