"""MCP server configuration: which servers a session starts, and how to reach them.

Sources, lowest first; a server named again in a higher source replaces the lower entry whole
(so a project can point ``github`` at another command than the user's):

1. the user's ``mcp.json`` in stagecrew's config dir (``files.user_mcp_path()``);
2. the ``mcp`` key of the user's stagecrew config (handed in by the caller);
3. the project's ``.mcp.json`` (Claude Code's file, at the project root);
4. the ``mcp`` key of the project's stagecrew config (handed in by the caller).

``.mcp.json`` / ``mcp.json`` hold ``{"mcpServers": {NAME: ENTRY}}``. The ``mcp`` key of a
stagecrew config holds::

    {"servers": {NAME: ENTRY},        # the same entries
     "enabled": [NAME, ...],          # only these run; the highest source that sets it wins
     "disabled": [NAME, ...],         # never these; the lists of all sources add up
     "startup_timeout_s": 30,         # per server start (initialize + listing)
     "call_timeout_s": 300}           # per tool call, prompt or resource read

An ENTRY is ``{"command", "args", "env", "cwd"}`` for a local process (``"type": "stdio"``
optional), or ``{"type": "http" | "streamable-http" | "sse", "url", "headers"}``; any entry may
also set ``startup_timeout_s`` and ``call_timeout_s``. ``${VAR}`` and ``${VAR:-default}`` are
expanded in command, args, env values, url and header values, from the environment (the
default applies when VAR is unset or empty; an unset VAR without default is an error naming
it). A relative ``cwd`` is taken from the project root, which is also the default.

Unknown keys in a ``.mcp.json`` entry are ignored, as Claude Code does (that file's format
belongs to another tool and grows); in stagecrew's own ``mcp`` key they are errors, like every
other stagecrew key. Every error is a ``ConfigError`` of one line: the file, the key path and
what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stagecrew.config import PROJECT_DIR, ConfigError, user_config_dir
from stagecrew.envutil import restored_env
from stagecrew.mcp.files import (
    SERVERS_KEY,
    project_mcp_path,
    read_json_object,
    user_mcp_path,
)

Transport = Literal["stdio", "http", "sse"]

DEFAULT_STARTUP_TIMEOUT_S = 30.0
DEFAULT_CALL_TIMEOUT_S = 300.0

# Names become part of tool names (``mcp__<server>__<tool>``), which providers limit to these.
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_TYPES: dict[str, Transport] = {
    "stdio": "stdio",
    "http": "http",
    "streamable-http": "http",
    "streamable_http": "http",
    "sse": "sse",
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ENTRY_KEYS = {
    "type",
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "startup_timeout_s",
    "call_timeout_s",
}
_MCP_KEYS = {"servers", "enabled", "disabled", "startup_timeout_s", "call_timeout_s"}


@dataclass(frozen=True)
class ServerConfig:
    """One server, expanded and validated: what the client needs to start or reach it."""

    name: str
    transport: Transport
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float | None = None
    call_timeout_s: float | None = None
    # The file (or layer) the entry came from, for messages.
    source: str = ""

    def target(self) -> str:
        """What a person recognises the server by: its command line or its URL."""
        if self.transport == "stdio":
            return " ".join([self.command, *self.args])
        return self.url


@dataclass(frozen=True)
class McpConfig:
    """The servers to start (in the order configured) and the ones filtered out."""

    servers: dict[str, ServerConfig] = field(default_factory=dict)
    disabled: dict[str, ServerConfig] = field(default_factory=dict)
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    # Where relative ``cwd`` values point, and the default cwd of stdio servers.
    project_root: Path | None = None


@dataclass(frozen=True)
class McpLayer:
    """One source of server settings: ``kind`` says which shape ``data`` has."""

    source: str
    kind: Literal["mcp.json", "config"]
    data: Mapping[str, Any]


# -- loading ------------------------------------------------------------------------------------


def load_mcp_config(
    project_root: Path | None,
    *,
    user: Mapping[str, Any] | None = None,
    project: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    user_source: str | None = None,
    project_source: str | None = None,
) -> McpConfig:
    """Read the MCP files and merge them with the stagecrew config's ``mcp`` keys (``user``,
    ``project``: the already-loaded values of that key, or ``None``). Raises ``ConfigError``."""
    layers: list[McpLayer] = []
    user_file = user_mcp_path()
    data = read_json_object(user_file)
    if data is not None:
        layers.append(McpLayer(str(user_file), "mcp.json", data))
    if user is not None:
        source = user_source or str(user_config_dir() / "config.json")
        layers.append(McpLayer(source, "config", user))
    if project_root is not None:
        project_file = project_mcp_path(project_root)
        data = read_json_object(project_file)
        if data is not None:
            layers.append(McpLayer(str(project_file), "mcp.json", data))
    if project is not None:
        default = (project_root or Path(".")) / PROJECT_DIR / "config.json"
        layers.append(McpLayer(project_source or str(default), "config", project))
    return build_mcp_config(layers, environ=environ, project_root=project_root)


def build_mcp_config(
    layers: list[McpLayer],
    *,
    environ: Mapping[str, str] | None = None,
    project_root: Path | None = None,
) -> McpConfig:
    """Merge ``layers`` (lowest first) into one validated ``McpConfig``."""
    env = restored_env(os.environ) if environ is None else dict(environ)
    servers: dict[str, ServerConfig] = {}
    enabled: list[str] | None = None
    disabled: list[str] = []
    startup = DEFAULT_STARTUP_TIMEOUT_S
    call = DEFAULT_CALL_TIMEOUT_S
    for layer in layers:
        if layer.kind == "mcp.json":
            raw_servers = layer.data.get(SERVERS_KEY, {})
            servers_key = SERVERS_KEY
        else:
            data = layer.data
            if not isinstance(data, Mapping):
                raise ConfigError(f"{layer.source}: 'mcp' must be an object, got {_kind(data)}")
            for key in data:
                if key not in _MCP_KEYS:
                    raise ConfigError(
                        f"{layer.source}: unknown key 'mcp.{key}'; expected one of "
                        + ", ".join(sorted(_MCP_KEYS))
                    )
            raw_servers = data.get("servers", {})
            servers_key = "mcp.servers"
            if "enabled" in data:
                enabled = _names(layer.source, "mcp.enabled", data["enabled"])
            if "disabled" in data:
                disabled += _names(layer.source, "mcp.disabled", data["disabled"])
            if "startup_timeout_s" in data:
                startup = _positive(
                    layer.source, "mcp.startup_timeout_s", data["startup_timeout_s"]
                )
            if "call_timeout_s" in data:
                call = _positive(layer.source, "mcp.call_timeout_s", data["call_timeout_s"])
        if not isinstance(raw_servers, Mapping):
            raise ConfigError(
                f"{layer.source}: '{servers_key}' must be an object of servers by name, "
                f"got {_kind(raw_servers)}"
            )
        for name, entry in raw_servers.items():
            where = _Where(layer.source, f"{servers_key}.{name}", strict=layer.kind == "config")
            servers[name] = parse_entry(name, entry, where, env, project_root)
    active = {
        n: s for n, s in servers.items() if (enabled is None or n in enabled) and n not in disabled
    }
    off = {n: s for n, s in servers.items() if n not in active}
    return McpConfig(
        servers=active,
        disabled=off,
        startup_timeout_s=startup,
        call_timeout_s=call,
        project_root=project_root,
    )


# -- one entry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    source: str
    path: str
    strict: bool

    def error(self, key: str | None, message: str) -> ConfigError:
        path = f"{self.path}.{key}" if key else self.path
        return ConfigError(f"{self.source}: '{path}' {message}")


def parse_entry(
    name: str,
    entry: Any,
    where: _Where,
    env: Mapping[str, str],
    project_root: Path | None = None,
    *,
    expand: bool = True,
) -> ServerConfig:
    """Validate and expand one server entry; raises ``ConfigError`` naming the key.

    ``expand=False`` validates the entry as written and keeps every ``${VAR}`` reference in
    the result (``env`` is not read): what ``crew import claude`` reports and copies must never
    hold a secret the environment would have put there."""
    if not SERVER_NAME.match(name):
        raise where.error(
            None,
            "is not a usable server name: use letters, digits, '_' and '-' only "
            "(it becomes part of tool names like mcp__<server>__<tool>)",
        )
    if not isinstance(entry, Mapping):
        raise where.error(None, f"must be an object, got {_kind(entry)}")
    if where.strict:
        for key in entry:
            if key not in _ENTRY_KEYS:
                raise where.error(
                    key, "is not a known key; expected " + ", ".join(sorted(_ENTRY_KEYS))
                )
    kind = entry.get("type")
    if kind is None:
        if "command" in entry:
            kind = "stdio"
        elif "url" in entry:
            kind = "http"
        else:
            raise where.error(None, 'needs "command" (a local server) or "type" and "url"')
    if not isinstance(kind, str) or kind not in _TYPES:
        raise where.error(
            "type", f"must be one of stdio, http, streamable-http, sse (got {_shown(kind)})"
        )
    transport = _TYPES[kind]
    timeouts = {
        key: _positive(where.source, f"{where.path}.{key}", entry[key])
        for key in ("startup_timeout_s", "call_timeout_s")
        if key in entry
    }

    expand_vars = expand  # the name ``expand`` is the helper below from here on

    def expand(key: str, value: str) -> str:
        return _expand(value, env, where, key) if expand_vars else value

    if transport == "stdio":
        command = entry.get("command")
        if not isinstance(command, str) or not command.strip():
            raise where.error("command", f"must be a non-empty string (got {_shown(command)})")
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise where.error("args", f"must be a list of strings (got {_shown(args)})")
        raw_env = _string_map(entry.get("env", {}), where, "env")
        cwd = entry.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise where.error("cwd", f"must be a string (got {_shown(cwd)})")
        if cwd is not None:
            cwd = expand("cwd", cwd)
            if expand_vars and project_root is not None and not os.path.isabs(cwd):
                cwd = str(project_root / cwd)
        return ServerConfig(
            name=name,
            transport="stdio",
            command=expand("command", command),
            args=tuple(expand(f"args.{i}", a) for i, a in enumerate(args)),
            env={k: expand(f"env.{k}", v) for k, v in raw_env.items()},
            cwd=cwd,
            source=where.source,
            **timeouts,
        )
    url = entry.get("url")
    if not isinstance(url, str) or not url.strip():
        raise where.error("url", f"must be a non-empty string (got {_shown(url)})")
    url = expand("url", url)
    checked = url if expand_vars else _with_defaults(url)
    if checked is not None and not checked.startswith(("http://", "https://")):
        raise where.error("url", f"must be an http:// or https:// URL (got {_shown(url)})")
    headers = _string_map(entry.get("headers", {}), where, "headers")
    return ServerConfig(
        name=name,
        transport=transport,
        url=url,
        headers={k: expand(f"headers.{k}", v) for k, v in headers.items()},
        source=where.source,
        **timeouts,
    )


def check_entry(name: str, entry: Any, source: str, *, strict: bool = False) -> ServerConfig:
    """One server entry validated as written, ``${VAR}`` references kept (nothing is read from
    the environment): ``source`` names the file in errors, ``strict`` refuses unknown keys as
    stagecrew's own ``mcp`` key does (``.mcp.json`` entries may carry keys of other tools).
    Raises ``ConfigError``."""
    key = "mcp.servers" if strict else SERVERS_KEY
    return parse_entry(name, entry, _Where(source, f"{key}.{name}", strict), {}, expand=False)


def entry_keys() -> frozenset[str]:
    """The keys a server entry may have in stagecrew's own ``mcp`` key."""
    return frozenset(_ENTRY_KEYS)


def variable_references(value: str) -> list[tuple[str, str | None]]:
    """``(name, default)`` of each ``${VAR}`` / ``${VAR:-default}`` in ``value``, in order."""
    return [(m.group(1), m.group(2)) for m in _VAR.finditer(value)]


def _with_defaults(value: str) -> str | None:
    """``value`` with each reference replaced by its default; None when one has none (the
    value can only be checked once the environment fills it in)."""
    refs = variable_references(value)
    if any(default is None for _, default in refs):
        return None
    return _VAR.sub(lambda m: m.group(2), value)


def _expand(value: str, env: Mapping[str, str], where: _Where, key: str) -> str:
    def one(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        current = env.get(var)
        if default is not None:
            return current if current else default
        if current is None:
            raise where.error(
                key,
                f"uses ${{{var}}}, but the environment variable {var} is not set "
                f"(set it, or write ${{{var}:-default}})",
            )
        return current

    return _VAR.sub(one, value)


def _string_map(value: Any, where: _Where, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise where.error(key, f"must be an object of string values (got {_shown(value)})")
    return dict(value)


def _names(source: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: '{key}' must be a list of server names (got {_shown(value)})")
    return list(value)


def _positive(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"{source}: '{key}' must be a number of seconds > 0 (got {_shown(value)})"
        )
    return float(value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    import json

    if isinstance(value, str | int | float | bool | type(None)):
        return json.dumps(value)
    return _kind(value)
