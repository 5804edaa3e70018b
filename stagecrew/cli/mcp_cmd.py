"""``crew mcp``: list, add and remove MCP servers, as ``claude mcp`` does.

``--scope project`` (the default) edits ``.mcp.json`` at the project root, the file Claude Code
reads, so both tools see the same servers; ``--scope user`` edits ``mcp.json`` in stagecrew's
user config dir (same format). ``list`` starts every configured server once to show whether
it runs, its tool count and start time, then stops them all. Configuration errors are one
line on stderr and exit 2, like the rest of ``crew``.
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from stagecrew.mcp.client import ServerStatus
    from stagecrew.mcp.config import McpConfig

EXIT_USAGE = 2
EXIT_FAILED = 1

mcp_app = typer.Typer(
    name="mcp",
    help="Configure MCP servers (Claude Code's .mcp.json) and check that they start.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Scope(enum.StrEnum):
    project = "project"
    user = "user"


class TransportOption(enum.StrEnum):
    stdio = "stdio"
    http = "http"
    sse = "sse"


CwdOption = Annotated[
    Path | None, typer.Option(help="Project directory (default: the current one).")
]


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    sys.stderr.write(f"crew: {message}\n")
    return typer.Exit(code)


def _project_root(cwd: Path | None) -> Path:
    from stagecrew.config import find_project_root

    return find_project_root(cwd or Path.cwd())


def _scope_path(scope: Scope, root: Path) -> Path:
    from stagecrew.mcp.files import project_mcp_path, user_mcp_path

    return project_mcp_path(root) if scope is Scope.project else user_mcp_path()


def load_for_cli(root: Path) -> McpConfig:
    """The MCP configuration as a session would see it: the MCP files plus the ``mcp`` keys of
    the user's and the project's stagecrew config files (read raw here, since the CLI has no
    loaded ``Config`` for this command)."""
    from stagecrew.config import PROJECT_DIR, user_config_dir
    from stagecrew.mcp.config import load_mcp_config
    from stagecrew.mcp.files import read_json_object

    user_file = user_config_dir() / "config.json"
    project_file = root / PROJECT_DIR / "config.json"
    user = (read_json_object(user_file) or {}).get("mcp")
    project = (read_json_object(project_file) or {}).get("mcp")
    return load_mcp_config(
        root,
        user=user,
        project=project,
        user_source=str(user_file),
        project_source=str(project_file),
    )


@mcp_app.command("list")
def list_servers(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    cwd: CwdOption = None,
) -> None:
    """Start every configured server once and show its status, tools and start time."""
    from stagecrew.config import ConfigError

    root = _project_root(cwd)
    try:
        config = load_for_cli(root)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if not config.servers and not config.disabled:
        if as_json:
            print(json.dumps({"servers": [], "notices": []}))
        else:
            print("No MCP servers configured. Add one with: crew mcp add NAME -- COMMAND [ARGS...]")
        raise typer.Exit(0)
    import asyncio

    rows, notices = asyncio.run(_probe(config, root))
    if as_json:
        print(
            json.dumps(
                {"servers": [_row_dict(r) for r in rows], "notices": notices}, ensure_ascii=False
            )
        )
        raise typer.Exit(0)
    _print_table(rows)
    raise typer.Exit(0)


async def _probe(config: McpConfig, root: Path) -> tuple[list[ServerStatus], list[str]]:
    from stagecrew.mcp.client import McpManager

    manager = McpManager(config, cwd=root)
    try:
        notices = await manager.start()
        return manager.status(), notices
    finally:
        await manager.stop()


def _row_dict(row: ServerStatus) -> dict[str, Any]:
    return {
        "name": row.name,
        "transport": row.transport,
        "status": row.status,
        "tools": row.tools,
        "prompts": row.prompts,
        "resources": row.resources,
        "start_ms": None if row.start_ms is None else round(row.start_ms, 1),
        "error": row.error,
        "target": row.target,
    }


def _print_table(rows: list[ServerStatus]) -> None:
    table = [("NAME", "TRANSPORT", "STATUS", "TOOLS", "START", "DETAIL")]
    for r in rows:
        start = f"{r.start_ms:.0f} ms" if r.start_ms is not None else "-"
        tools = str(r.tools) if r.status == "running" else "-"
        detail = r.error if r.error else r.target
        table.append((r.name, r.transport, r.status, tools, start, detail or ""))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)), row[5])


@mcp_app.command("add")
def add_server(
    name: Annotated[str, typer.Argument(help="Server name (letters, digits, _ and -).")],
    target: Annotated[
        list[str],
        typer.Argument(
            help="stdio: the command and its arguments, after --; http/sse: the URL.",
            show_default=False,
        ),
    ],
    transport: Annotated[
        TransportOption, typer.Option("--transport", "-t", help="stdio, http or sse.")
    ] = TransportOption.stdio,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", help="KEY=VALUE for the server's environment (repeatable)."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", help="'Name: value' HTTP header (repeatable)."),
    ] = None,
    scope: Annotated[
        Scope, typer.Option("--scope", "-s", help="project (.mcp.json) or user.")
    ] = Scope.project,
    cwd: CwdOption = None,
) -> None:
    """Add a server: `crew mcp add NAME -- CMD ARGS...` or
    `crew mcp add --transport http NAME URL`."""
    from stagecrew.config import ConfigError
    from stagecrew.mcp.config import SERVER_NAME
    from stagecrew.mcp.files import add_server as write_server

    if not SERVER_NAME.match(name):
        raise _fail(f"'{name}' is not a usable server name: use letters, digits, '_' and '-'")
    entry: dict[str, Any]
    if transport is TransportOption.stdio:
        if header:
            raise _fail("--header is for http and sse servers")
        entry = {"type": "stdio", "command": target[0], "args": target[1:]}
        pairs = _pairs(env or [], "=", "--env", "KEY=VALUE")
        if pairs:
            entry["env"] = pairs
    else:
        if env:
            raise _fail("--env is for stdio servers; use --header for http and sse")
        if len(target) != 1 or not target[0].startswith(("http://", "https://")):
            raise _fail(f"--transport {transport.value} takes one http:// or https:// URL")
        entry = {"type": transport.value, "url": target[0]}
        pairs = _pairs(header or [], ":", "--header", "'Name: value'")
        if pairs:
            entry["headers"] = pairs
    path = _scope_path(scope, _project_root(cwd))
    try:
        write_server(path, name, entry)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    print(f"Added {transport.value} MCP server '{name}' to {path} ({scope.value} scope)")


def _pairs(items: list[str], sep: str, option: str, form: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            raise _fail(f"{option} takes {form}, got {item!r}")
        out[key.strip()] = value.strip() if sep == ":" else value
    return out


@mcp_app.command("remove")
def remove_server(
    name: Annotated[str, typer.Argument(help="Server name.")],
    scope: Annotated[
        Scope | None,
        typer.Option("--scope", "-s", help="project or user (default: wherever it is)."),
    ] = None,
    cwd: CwdOption = None,
) -> None:
    """Remove a server from the project's .mcp.json or the user's mcp.json."""
    from stagecrew.config import ConfigError
    from stagecrew.mcp.files import remove_server as drop
    from stagecrew.mcp.files import server_names

    root = _project_root(cwd)
    scopes = [scope] if scope is not None else [Scope.project, Scope.user]
    try:
        found = [s for s in scopes if name in server_names(_scope_path(s, root))]
        if not found:
            where = " or ".join(str(_scope_path(s, root)) for s in scopes)
            raise _fail(f"no MCP server named '{name}' in {where}", EXIT_FAILED)
        if len(found) > 1:
            raise _fail(
                f"'{name}' is configured in both scopes; say which with --scope project or "
                "--scope user"
            )
        path = _scope_path(found[0], root)
        drop(path, name)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    print(f"Removed MCP server '{name}' from {path} ({found[0].value} scope)")
