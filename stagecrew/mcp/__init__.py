"""MCP servers as tool providers: people's existing servers (Claude Code's ``.mcp.json``).

The public surface::

    from stagecrew.mcp import load_mcp_config, McpManager

    config = load_mcp_config(project_root, user=user_mcp_key, project=project_mcp_key)
    async with McpManager(config) as mcp:      # starts every server in parallel
        mcp.notices                            # one line per server that failed, etc.
        mcp.specs()                            # ToolSpecs: mcp__<server>__<tool>, mcp_resources
        await mcp.call(name, arguments, ctx)   # a ToolResult, never an exception
        mcp.list_prompts(); await mcp.expand_prompt_command("/mcp__s__p args")
        mcp.status()                           # rows for `crew mcp list`

Modules: ``config`` (files and layers, ``${VAR}`` expansion), ``files`` (reading and editing
the JSON files), ``client`` (the manager), ``connection`` (one server's lifetime),
``launcher`` (the process that ties a stdio server to stagecrew's life), ``inbound`` (stream
watch, schema repair), ``render`` (results as text), ``names`` (tool names).

The SDK costs about a second to import, so only the configuration is imported eagerly; the
manager and its types load on first use (``crew --help`` and config checks stay fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stagecrew.mcp.config import (
    McpConfig,
    McpLayer,
    ServerConfig,
    build_mcp_config,
    load_mcp_config,
)

if TYPE_CHECKING:
    from stagecrew.mcp.client import McpError, McpManager, PromptInfo, ResourceInfo, ServerStatus

_LAZY = {"McpManager", "McpError", "PromptInfo", "ResourceInfo", "ServerStatus"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from stagecrew.mcp import client

        return getattr(client, name)
    raise AttributeError(f"module 'stagecrew.mcp' has no attribute {name!r}")


__all__ = [
    "McpConfig",
    "McpError",
    "McpLayer",
    "McpManager",
    "PromptInfo",
    "ResourceInfo",
    "ServerConfig",
    "ServerStatus",
    "build_mcp_config",
    "load_mcp_config",
]
