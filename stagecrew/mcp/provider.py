"""The MCP servers as a session tool provider (kind ``mcp`` in ``tools.providers.PROVIDERS``).

The CLI reads the configuration (``load_mcp_config``) and puts it in the agent's spec as one
``ProviderSpec`` (``provider_spec``); its options are the validated, expanded configuration as
plain JSON (``config_to_options``), so it crosses process boundaries as it is and the place
that runs the servers rebuilds it with ``config_from_options``. The servers run in the
session's MCP service (one ``McpManager`` per session, shared by the primary agent and its
subagents); ``create`` connects an agent to that service.

Note: ``${VAR}`` values are expanded when the configuration is loaded, so the options can hold
secrets (tokens in ``env`` or ``headers``). They travel like the session's credentials and
must not be logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stagecrew.mcp.config import McpConfig, ServerConfig
from stagecrew.tools.providers import ProviderEnv, ProviderSpec, ServiceTools, ToolProvider

KIND = "mcp"


def provider_spec(config: McpConfig) -> ProviderSpec | None:
    """The spec's provider entry for ``config``; ``None`` when no server is configured."""
    if not config.servers and not config.disabled:
        return None
    return ProviderSpec(kind=KIND, name=KIND, options=config_to_options(config))


def config_to_options(config: McpConfig) -> dict[str, Any]:
    return {
        "servers": {name: _server_dict(s) for name, s in config.servers.items()},
        "disabled": {name: _server_dict(s) for name, s in config.disabled.items()},
        "startup_timeout_s": config.startup_timeout_s,
        "call_timeout_s": config.call_timeout_s,
        "project_root": str(config.project_root) if config.project_root else None,
    }


def config_from_options(options: dict[str, Any]) -> McpConfig:
    root = options.get("project_root")
    return McpConfig(
        servers={n: _server(d) for n, d in (options.get("servers") or {}).items()},
        disabled={n: _server(d) for n, d in (options.get("disabled") or {}).items()},
        startup_timeout_s=float(options.get("startup_timeout_s", 30.0)),
        call_timeout_s=float(options.get("call_timeout_s", 300.0)),
        project_root=Path(root) if root else None,
    )


async def create(spec: ProviderSpec, env: ProviderEnv) -> ToolProvider:
    """The agent's view of the session's MCP service: specs fetched once, calls forwarded,
    the service's notices (servers that did not start) carried for the person to see."""
    if env.service is None:
        raise RuntimeError("MCP servers run in the session's MCP service; this agent has none")
    port = await env.service(KIND, spec.options)
    provider = await ServiceTools.connect(spec.name or KIND, port)
    provider.notices = list(await port.notices())
    return provider


def _server_dict(server: ServerConfig) -> dict[str, Any]:
    return {
        "name": server.name,
        "transport": server.transport,
        "command": server.command,
        "args": list(server.args),
        "env": dict(server.env),
        "cwd": server.cwd,
        "url": server.url,
        "headers": dict(server.headers),
        "startup_timeout_s": server.startup_timeout_s,
        "call_timeout_s": server.call_timeout_s,
        "source": server.source,
    }


def _server(data: dict[str, Any]) -> ServerConfig:
    return ServerConfig(
        name=data["name"],
        transport=data["transport"],
        command=data.get("command", ""),
        args=tuple(data.get("args") or ()),
        env=dict(data.get("env") or {}),
        cwd=data.get("cwd"),
        url=data.get("url", ""),
        headers=dict(data.get("headers") or {}),
        startup_timeout_s=data.get("startup_timeout_s"),
        call_timeout_s=data.get("call_timeout_s"),
        source=data.get("source", ""),
    )
