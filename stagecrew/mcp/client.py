"""The MCP manager: every configured server started, its tools offered as a ToolProvider.

``McpManager`` starts all servers in parallel (stdio, streamable HTTP, legacy SSE, each through
the official SDK's transport and ``ClientSession``), each within its start-up timeout, and offers
their tools as ``mcp__<server>__<tool>``. It is the one object an agent registers: it has the
``ToolProvider`` shape (``name``, ``specs()``, ``call()``), plus prompts, resources and a status
list for ``crew mcp list``.

Faults never stop the session:

* a server that does not start (command not found, exits, no answer within the timeout) is a
  one-line notice naming it with the tail of its stderr, and the others go on;
* a call that gets no answer within ``call_timeout_s`` is an error result (the SDK sends the
  server a cancel);
* a server that dies gives an error result for the call in flight and is restarted once; when
  it dies again its tools answer with an error result from then on. Death is seen when the
  stream ends (stdio: the process exited) or when a call fails and a ping gets no answer
  (HTTP: the server went away); an HTTP server is reconnected within the start-up timeout,
  so one that restarts itself comes back.

``stop()`` ends every server: sessions are closed (the SDK closes stdin, then SIGTERMs and
SIGKILLs the server's process group), and a sweep kills any launcher still found by its tag.
The launcher (``launcher.py``) makes a stdio server's whole group die with this process even
when it is killed with ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError

from stagecrew.envutil import restored_env
from stagecrew.mcp.config import McpConfig, ServerConfig
from stagecrew.mcp.connection import Connection, Listing, StartError
from stagecrew.mcp.names import qualified_name
from stagecrew.mcp.render import (
    OUTPUT_LIMIT,
    render_prompt,
    render_read_resource,
    render_tool_result,
)
from stagecrew.tools.base import ToolContext, ToolResult
from stagecrew.tools.providers import ToolSpec

if TYPE_CHECKING:
    from mcp import ClientSession

MAX_RESTARTS = 1
PING_TIMEOUT_S = 5.0
RESOURCES_TOOL = "mcp_resources"
Status = Literal["starting", "running", "restarting", "failed", "disabled", "stopped"]


class McpError(Exception):
    """A prompt or resource request that failed; the message is one line for people."""


@dataclass(frozen=True)
class ServerStatus:
    """One row of ``crew mcp list``."""

    name: str
    transport: str
    status: Status
    tools: int = 0
    prompts: int = 0
    resources: int = 0
    start_ms: float | None = None
    error: str | None = None
    restarts: int = 0
    target: str = ""


@dataclass(frozen=True)
class PromptInfo:
    """A server prompt as the chat offers it: ``/mcp__<server>__<prompt> args``."""

    name: str
    server: str
    prompt: str
    description: str
    # (name, description, required) per argument, in the server's order.
    arguments: tuple[tuple[str, str, bool], ...] = ()

    def usage(self) -> str:
        args = " ".join(f"<{a}>" if req else f"[{a}]" for a, _, req in self.arguments)
        return f"/{self.name} {args}".rstrip()


@dataclass(frozen=True)
class ResourceInfo:
    server: str
    uri: str
    name: str
    description: str = ""
    mime_type: str | None = None


@dataclass(frozen=True)
class _Tool:
    server: str
    tool: str
    spec: ToolSpec


@dataclass
class _Server:
    config: ServerConfig
    status: Status = "starting"
    conn: Connection | None = None
    generation: int = 0
    restarts: int = 0
    error: str | None = None
    start_ms: float | None = None
    restarting: asyncio.Task[Any] | None = None
    # The last listing of a server that ran: its tools keep answering (with an error when
    # the server is gone for good) rather than vanishing from under the model.
    listing: Listing | None = None
    problems: list[str] = field(default_factory=list)


class McpManager:
    """Every configured MCP server of one session, as one tool provider."""

    name = "mcp"

    def __init__(
        self,
        config: McpConfig,
        *,
        cwd: Path | None = None,
        environ: dict[str, str] | None = None,
        output_limit: int = OUTPUT_LIMIT,
        max_restarts: int = MAX_RESTARTS,
    ) -> None:
        self.config = config
        self.cwd = Path(cwd or config.project_root or os.getcwd())
        self.environ = restored_env(os.environ) if environ is None else dict(environ)
        self.output_limit = output_limit
        self.max_restarts = max_restarts
        self.notices: list[str] = []
        self._servers = {name: _Server(cfg) for name, cfg in config.servers.items()}
        self._disabled = dict(config.disabled)
        self._tools: dict[str, _Tool] = {}
        self._prompts: dict[str, PromptInfo] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._id = uuid.uuid4().hex[:8]
        self._workdir: Path | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Start every server in parallel; returns the notices (one line per problem)."""
        self._workdir = Path(tempfile.mkdtemp(prefix=f"stagecrew-mcp-{self._id}-"))
        # Schema checks need jsonschema (about 150 ms to import): load it in a thread while the
        # servers start, not in the event loop when the first listing arrives.
        warm = asyncio.create_task(asyncio.to_thread(warm_imports))
        await asyncio.gather(*(self._start(srv) for srv in self._servers.values()))
        await warm
        self._index()
        return list(self.notices)

    async def stop(self) -> None:
        """End every server. Safe to call twice, and after a failed start."""
        self._stopping = True
        for srv in self._servers.values():
            if srv.restarting is not None and not srv.restarting.done():
                srv.restarting.cancel()
        conns = [srv.conn for srv in self._servers.values() if srv.conn is not None]
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        pending = [t for t in self._background if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=15)
        for srv in self._servers.values():
            if srv.status in ("running", "starting", "restarting"):
                srv.status = "stopped"
            srv.conn = None
        self._sweep()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    async def __aenter__(self) -> McpManager:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _start(self, srv: _Server) -> None:
        try:
            conn = await self._open(srv, retry_connect=False)
        except StartError as exc:
            srv.status = "failed"
            srv.error = str(exc)
            self._notice(f"MCP server '{srv.config.name}' did not start: {exc}")
            return
        self._adopt(srv, conn)

    async def _open(self, srv: _Server, *, retry_connect: bool) -> Connection:
        """A new connection for ``srv``. An HTTP server being reconnected after it went away is
        retried until its start-up timeout, so one that restarts itself comes back."""
        cfg = srv.config
        timeout = cfg.startup_timeout_s or self.config.startup_timeout_s
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            srv.generation += 1
            conn = Connection(
                cfg,
                generation=srv.generation,
                startup_timeout_s=max(0.1, deadline - time.monotonic()),
                cwd=Path(cfg.cwd) if cfg.cwd else self.cwd,
                env={**self.environ, **cfg.env},
                workdir=self._workdir or Path(tempfile.gettempdir()),
                tag=f"stagecrew-mcp:{self._id}:{cfg.name}:{srv.generation}",
                on_closed=lambda c, s=srv: self._died(s, c),
                on_problem=lambda text, s=srv: self._problem(s, text),
            )
            srv.conn = conn
            try:
                await conn.open()
                return conn
            except StartError:
                srv.conn = None
                self._spawn(conn.close())  # its clean-up may take seconds; stop() waits for it
                retryable = retry_connect and cfg.transport != "stdio" and not self._stopping
                if not retryable or time.monotonic() + delay >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _adopt(self, srv: _Server, conn: Connection) -> None:
        srv.conn = conn
        srv.listing = conn.listing
        srv.status = "running"
        srv.error = None
        srv.start_ms = conn.start_ms

    # -- deaths and restarts -----------------------------------------------------------------

    def _died(self, srv: _Server, conn: Connection) -> str:
        """Record that ``conn`` ended without being asked to; returns the sentence for the
        model. Called by the owner task (stream ended) and by a failed call (no ping answer);
        only the first report of one connection's death counts."""
        name = srv.config.name
        note = conn.stderr_note()
        exited = "exited" if srv.config.transport == "stdio" else "stopped answering"
        if self._stopping:
            return f"MCP server '{name}' is stopping."
        restarted = (
            f"MCP server '{name}' {exited} while handling this call{note}. It is being "
            "restarted; call the tool again."
        )
        if srv.conn is not conn:  # this death was already handled
            if srv.status == "failed":
                return f"MCP server '{name}' is not available: {srv.error}"
            return restarted
        srv.conn = None
        self._spawn(conn.close())
        if srv.restarts < self.max_restarts:
            srv.restarts += 1
            srv.status = "restarting"
            srv.restarting = self._spawn(self._restart(srv))
            self._notice(f"MCP server '{name}' {exited}{note}; restarting it")
            return restarted
        srv.status = "failed"
        srv.error = f"{exited} again{note}; not restarted"
        self._notice(f"MCP server '{name}' {exited} again{note}; it is not restarted")
        return (
            f"MCP server '{name}' {exited} again{note}. It is not restarted: its tools are "
            "unavailable for the rest of this session."
        )

    async def _restart(self, srv: _Server) -> None:
        try:
            conn = await self._open(srv, retry_connect=True)
        except StartError as exc:
            srv.status = "failed"
            srv.error = f"restart failed: {exc}"
            self._notice(f"MCP server '{srv.config.name}' could not be restarted: {exc}")
            return
        if self._stopping:
            await conn.close()
            return
        self._adopt(srv, conn)
        self._index()

    async def _ready(self, srv: _Server) -> Connection | None:
        task = srv.restarting
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        conn = srv.conn
        if srv.status != "running" or conn is None or conn.session is None:
            return None
        return conn

    async def _gone(self, conn: Connection) -> bool:
        """Whether a connection whose request failed is dead: its stream ended, or it does not
        answer a ping (a live server that merely returned an error answers at once)."""
        session = conn.session
        if conn.ended.is_set() or session is None:
            return True
        try:
            with anyio.fail_after(PING_TIMEOUT_S):
                await session.send_ping()
        except Exception:
            return True
        return False

    # -- the tool provider -------------------------------------------------------------------

    def specs(self) -> list[ToolSpec]:
        specs = [t.spec for t in self._tools.values()]
        with_resources = [
            s.config.name
            for s in self._servers.values()
            if s.status == "running" and s.listing is not None and s.listing.resources
        ]
        if with_resources:
            specs.append(_resources_spec(with_resources))
        return specs

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Run one call of a tool from ``specs()``; every failure is an error result."""
        if name == RESOURCES_TOOL:
            return await self._resources_tool(arguments)
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult(content=f"Unknown MCP tool '{name}'.", is_error=True)
        return await self.call_tool(tool.server, tool.tool, arguments)

    async def call_tool(self, server: str, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """Call ``tool`` (the server's own name) on ``server``."""
        srv = self._servers.get(server)
        if srv is None:
            return _error(f"No MCP server named '{server}'.")
        conn = await self._ready(srv)
        if conn is None or conn.session is None:
            return _error(f"MCP server '{server}' is not available: {srv.error or srv.status}")
        timeout = srv.config.call_timeout_s or self.config.call_timeout_s
        meta = {"server": server, "tool": tool}
        t0 = time.perf_counter()
        try:
            # The SDK's own timeout sends the server a cancel; the outer one only guards
            # against a transport that never lets the request out.
            with anyio.fail_after(timeout + 10):
                result = await conn.session.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                return _error(
                    f"MCP tool '{tool}' on server '{server}' did not answer within {timeout:g} s; "
                    "the call was cancelled.",
                    meta,
                )
            if await self._gone(conn):
                return _error(self._died(srv, conn), meta)
            return _error(
                f"MCP server '{server}' returned an error for '{tool}': {exc.message}", meta
            )
        except TimeoutError:
            return _error(
                f"MCP tool '{tool}' on server '{server}' did not answer within {timeout:g} s.",
                meta,
            )
        except Exception as exc:
            if await self._gone(conn):
                return _error(self._died(srv, conn), meta)
            return _error(
                f"MCP tool '{tool}' on server '{server}' failed: {type(exc).__name__}: {exc}", meta
            )
        meta["ms"] = round((time.perf_counter() - t0) * 1000, 1)
        if not isinstance(result, types.CallToolResult):
            return _error(f"MCP tool '{tool}' returned an unexpected result.", meta)
        return render_tool_result(result, limit=self.output_limit, metadata=meta)

    # -- prompts -----------------------------------------------------------------------------

    def list_prompts(self) -> list[PromptInfo]:
        return list(self._prompts.values())

    async def get_prompt(
        self, server: str, name: str, arguments: dict[str, str] | None = None
    ) -> str:
        """The text of prompt ``name`` of ``server``, to send as the user's message. Raises
        ``McpError`` with one line when the server cannot give it."""
        result = await self._request(
            server,
            f"prompt '{name}'",
            lambda session: session.get_prompt(name, arguments or {}),
        )
        return render_prompt(result)

    async def _request(
        self, server: str, what: str, send: Callable[[ClientSession], Awaitable[Any]]
    ) -> Any:
        """One request to a server outside a tool call (a prompt, a resource), with the
        server's timeout; every way it can fail is an ``McpError`` with one line."""
        srv = self._servers.get(server)
        if srv is None:
            raise McpError(f"no MCP server named '{server}'")
        conn = await self._ready(srv)
        if conn is None or conn.session is None:
            raise McpError(f"MCP server '{server}' is not available: {srv.error or srv.status}")
        timeout = srv.config.call_timeout_s or self.config.call_timeout_s
        try:
            with anyio.fail_after(timeout):
                return await send(conn.session)
        except TimeoutError:
            raise McpError(f"MCP server '{server}' did not answer within {timeout:g} s") from None
        except Exception as exc:
            if await self._gone(conn):
                raise McpError(self._died(srv, conn)) from None
            message = exc.message if isinstance(exc, MCPError) else str(exc)
            raise McpError(f"MCP server '{server}': {what}: {message}") from None

    async def expand_prompt_command(self, line: str) -> str | None:
        """``/mcp__<server>__<prompt> args`` as the text to send, or ``None`` when ``line``
        names no MCP prompt. Words fill the prompt's arguments in order (quotes group words;
        the last argument takes what is left over). Raises ``McpError`` for a missing
        required argument, naming the usage."""
        text = line.strip()
        if not text.startswith("/mcp__"):
            return None
        command, _, rest = text[1:].partition(" ")
        info = self._prompts.get(command)
        if info is None:
            return None
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        values: dict[str, str] = {}
        names = [a for a, _, _ in info.arguments]
        for i, arg in enumerate(names):
            if i >= len(words):
                break
            values[arg] = " ".join(words[i:]) if i == len(names) - 1 else words[i]
        missing = [a for a, _, req in info.arguments if req and a not in values]
        if missing:
            raise McpError(f"missing {', '.join(missing)}; usage: {info.usage()}")
        return await self.get_prompt(info.server, info.prompt, values)

    # -- resources ---------------------------------------------------------------------------

    async def list_resources(self, server: str | None = None) -> list[ResourceInfo]:
        """Resources of the running servers (or of one), listed now. Raises ``McpError``."""
        out: list[ResourceInfo] = []
        for srv in self._servers.values():
            if server is not None and srv.config.name != server:
                continue
            conn = await self._ready(srv)
            if conn is None or conn.session is None or not conn.listing.has_resources:
                continue
            try:
                with anyio.fail_after(srv.config.call_timeout_s or self.config.call_timeout_s):
                    listed = await conn.session.list_resources()
            except Exception as exc:
                raise McpError(
                    f"MCP server '{srv.config.name}': listing resources: {exc}"
                ) from None
            for r in listed.resources:
                out.append(
                    ResourceInfo(
                        server=srv.config.name,
                        uri=str(r.uri),
                        name=r.name,
                        description=r.description or "",
                        mime_type=r.mime_type,
                    )
                )
        return out

    async def read_resource(self, server: str, uri: str) -> ToolResult:
        try:
            result = await self._request(
                server, f"reading {uri}", lambda session: session.read_resource(uri)
            )
        except McpError as exc:
            return _error(f"{exc}.")
        return ToolResult(
            content=render_read_resource(result, limit=self.output_limit),
            metadata={"server": server, "uri": uri},
        )

    async def _resources_tool(self, arguments: dict[str, Any]) -> ToolResult:
        action = arguments.get("action")
        server = arguments.get("server")
        if action == "list":
            try:
                found = await self.list_resources(server if isinstance(server, str) else None)
            except McpError as exc:
                return _error(str(exc))
            if not found:
                return ToolResult(content="No MCP resources.")
            lines = [
                f"{r.server}  {r.uri}  {r.name}"
                + (f" ({r.mime_type})" if r.mime_type else "")
                + (f": {r.description}" if r.description else "")
                for r in found
            ]
            return ToolResult(content="\n".join(lines))
        if action == "read":
            uri = arguments.get("uri")
            if not isinstance(server, str) or not isinstance(uri, str):
                return _error("action 'read' needs 'server' and 'uri' (see action 'list').")
            return await self.read_resource(server, uri)
        return _error("'action' must be 'list' or 'read'.")

    # -- status --------------------------------------------------------------------------------

    def status(self) -> list[ServerStatus]:
        """Every configured server with its state, in configuration order."""
        rows = []
        for name, srv in self._servers.items():
            listing = srv.listing
            rows.append(
                ServerStatus(
                    name=name,
                    transport=srv.config.transport,
                    status=srv.status,
                    tools=sum(1 for t in self._tools.values() if t.server == name),
                    prompts=len(listing.prompts) if listing else 0,
                    resources=len(listing.resources) if listing else 0,
                    start_ms=srv.start_ms,
                    error=srv.error,
                    restarts=srv.restarts,
                    target=srv.config.target(),
                )
            )
        for name, cfg in self._disabled.items():
            rows.append(
                ServerStatus(
                    name=name, transport=cfg.transport, status="disabled", target=cfg.target()
                )
            )
        return rows

    # -- internals -----------------------------------------------------------------------------

    def _index(self) -> None:
        """Rebuild tool and prompt names from the running servers, in configuration order
        (so names are stable across restarts)."""
        tools: dict[str, _Tool] = {}
        prompts: dict[str, PromptInfo] = {}
        for name, srv in self._servers.items():
            listing = srv.listing
            if listing is None:
                continue
            for tool in listing.tools:
                qualified = qualified_name(name, tool.name, frozenset(tools))
                annotations = tool.annotations
                spec = ToolSpec(
                    name=qualified,
                    description=tool.description or tool.title or f"{tool.name} (MCP: {name})",
                    parameters=dict(tool.input_schema),
                    read_only=bool(annotations and annotations.read_only_hint),
                    provider=f"mcp:{name}",
                )
                tools[qualified] = _Tool(name, tool.name, spec)
            for prompt in listing.prompts:
                qualified = qualified_name(name, prompt.name, frozenset(prompts))
                prompts[qualified] = PromptInfo(
                    name=qualified,
                    server=name,
                    prompt=prompt.name,
                    description=prompt.description or "",
                    arguments=tuple(
                        (a.name, a.description or "", bool(a.required))
                        for a in prompt.arguments or []
                    ),
                )
        self._tools = tools
        self._prompts = prompts

    def _problem(self, srv: _Server, text: str) -> None:
        if text not in srv.problems:
            srv.problems.append(text)
            self._notice(f"MCP server '{srv.config.name}': {text}")

    def _notice(self, text: str) -> None:
        if text not in self.notices:
            self.notices.append(text)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        """A background task that ``stop()`` waits for."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _sweep(self) -> None:
        """Kill any launcher of this manager still alive, with its process group: the last
        line of defence should a session's clean-up have been cut short."""
        try:
            import psutil
        except ImportError:  # pragma: no cover
            return
        tag = f"stagecrew-mcp:{self._id}:"
        for proc in psutil.Process().children(recursive=True):
            try:
                if any(arg.startswith(tag) for arg in proc.cmdline()):
                    os.killpg(proc.pid, 9)
            except (psutil.Error, OSError):
                continue


def warm_imports() -> None:
    """Load what checking schemas needs (jsonschema, ~150 ms) ahead of the first listing."""
    with contextlib.suppress(ImportError):
        import jsonschema.validators  # noqa: F401


def _resources_spec(servers: list[str]) -> ToolSpec:
    return ToolSpec(
        name=RESOURCES_TOOL,
        description=(
            "List or read resources (files, records, documents) offered by MCP servers "
            f"({', '.join(servers)}). action 'list' shows server, uri and name of each; "
            "action 'read' returns one resource's content."
        ),
        parameters={
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["list", "read"]},
                "server": {
                    "type": "string",
                    "description": "Server name (for read; optional for list).",
                },
                "uri": {"type": "string", "description": "Resource URI (for read)."},
            },
            "required": ["action"],
        },
        read_only=True,
        provider="mcp",
    )


def _error(text: str, metadata: dict[str, Any] | None = None) -> ToolResult:
    return ToolResult(content=text, is_error=True, metadata=dict(metadata or {}))
