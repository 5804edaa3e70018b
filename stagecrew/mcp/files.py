"""The files MCP servers are configured in, read and edited in place.

Two files share Claude Code's ``.mcp.json`` format (``{"mcpServers": {NAME: entry}}``):

* project scope: ``.mcp.json`` at the project root, the very file Claude Code reads, so a
  repository that already works with Claude Code works with stagecrew unchanged;
* user scope: ``mcp.json`` in stagecrew's user config dir (``~/.config/stagecrew/mcp.json``,
  or ``$STAGECREW_CONFIG_DIR/mcp.json``). It is a file of its own rather than a key of
  ``config.json`` so ``crew mcp add --scope user`` never rewrites the person's main config,
  and so a server block can be pasted from any MCP server's README as it is.

Editing keeps everything else in the file as it was (other servers, other top-level keys,
their order); only the one entry changes, and the file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from stagecrew.config import ConfigError, describe_os_error, read_json_file, user_config_dir

PROJECT_FILE = ".mcp.json"
USER_FILE = "mcp.json"
SERVERS_KEY = "mcpServers"


def project_mcp_path(project_root: Path) -> Path:
    return project_root / PROJECT_FILE


def user_mcp_path() -> Path:
    return user_config_dir() / USER_FILE


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when there is no such file (anything else that
    stops the read is a one-line ``ConfigError``: skipping an unreadable file would quietly
    run without the servers a person configured)."""
    return read_json_file(path, "MCP config")


def _servers_of(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    servers = data.get(SERVERS_KEY)
    if servers is None:
        return {}
    if not isinstance(servers, dict):
        raise ConfigError(
            f"{path}: '{SERVERS_KEY}' must be an object of servers by name, "
            f"got {type(servers).__name__}"
        )
    return servers


def server_names(path: Path) -> list[str]:
    data = read_json_object(path)
    return list(_servers_of(path, data)) if data else []


def add_server(path: Path, name: str, entry: dict[str, Any], *, replace: bool = False) -> None:
    """Write ``entry`` as server ``name`` into ``path`` (created if missing)."""
    data = read_json_object(path) or {}
    servers = _servers_of(path, data)
    if name in servers and not replace:
        raise ConfigError(f"{path}: an MCP server named '{name}' is already configured")
    servers[name] = entry
    data[SERVERS_KEY] = servers
    _write(path, data)


def remove_server(path: Path, name: str) -> bool:
    """Drop server ``name`` from ``path``; ``False`` when it was not there."""
    data = read_json_object(path)
    if not data:
        return False
    servers = _servers_of(path, data)
    if name not in servers:
        return False
    del servers[name]
    data[SERVERS_KEY] = servers
    _write(path, data)
    return True


def _write(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically (a crash leaves the old file or the new one, never half)."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(os.stat(path).st_mode) if path.exists() else None
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot write: {describe_os_error(path, exc, want='w')}"
        ) from exc
