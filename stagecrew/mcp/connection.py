"""One lifetime of one MCP server: a process (or HTTP session), its SDK session, its listings.

The SDK's transports and ``ClientSession`` are anyio context managers: they must be entered and
left by the same task, and their clean-up (close stdin, wait, kill the process group) must not
be interrupted. So each connection has an owner task that enters them, publishes the session,
sleeps until it is told to stop or the server's stream ends, and leaves them in order. Every
other task only sends requests through the session.

The start-up timeout is a deadline on a cancel scope around the whole lifetime (lifted once
the server is ready), never a ``wait_for`` around entering the contexts: anyio cancel scopes
must nest, and a native ``Task.cancel`` can cut the SDK's shielded clean-up short and leak the
process. Stopping is an event, or the scope's own ``cancel()`` while still starting; the
native cancel is only a last resort after a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import mcp_types as types
from mcp.client.session import ClientSession

from stagecrew import __version__
from stagecrew.mcp.config import ServerConfig
from stagecrew.mcp.inbound import InboundStream

LAUNCHER = Path(__file__).with_name("launcher.py")
# How long a stop may take before the owner task is cancelled natively: the SDK's stdio
# shutdown is bounded by about 6.5 s (flush 0.5, stdin-close grace 2, SIGTERM grace 2, reap 2).
STOP_TIMEOUT_S = 10.0
CLIENT_INFO = types.Implementation(name="stagecrew", version=__version__)
# The largest single message taken over streamable HTTP. The SDK's default (1 MiB) fails a
# call whose result is larger; results are cut to the model's limit after they arrive, so this
# only bounds memory.
MAX_HTTP_MESSAGE_BYTES = 64 * 1024 * 1024


class StartError(Exception):
    """A server that did not start; the message is one line a person can act on."""


@dataclass
class Listing:
    """What a server offers, as listed when it started."""

    tools: list[types.Tool] = field(default_factory=list)
    prompts: list[types.Prompt] = field(default_factory=list)
    resources: list[types.Resource] = field(default_factory=list)
    has_resources: bool = False


class Connection:
    """One start of one server. ``open()`` returns when it is ready or raises ``StartError``;
    ``close()`` always ends it (and its process). ``on_closed`` is called when the server's
    stream ended without anyone asking (the server died)."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        generation: int,
        startup_timeout_s: float,
        cwd: Path,
        env: dict[str, str],
        workdir: Path,
        tag: str,
        on_closed: Callable[[Connection], None],
        on_problem: Callable[[str], None],
    ) -> None:
        self.config = config
        self.generation = generation
        self.startup_timeout_s = startup_timeout_s
        self.cwd = cwd
        self.env = env
        self.tag = tag
        self.session: ClientSession | None = None
        self.listing = Listing()
        self.start_ms: float | None = None
        self.started = False
        self.ended = asyncio.Event()
        self.stderr_path = workdir / f"{config.name}.{generation}.stderr"
        self._errlog: IO[str] | None = None
        self._on_closed = on_closed
        self._on_problem = on_problem
        self._wake = asyncio.Event()
        self._stopping = False
        self._scope: anyio.CancelScope | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the server; raises ``StartError``. On a timeout it returns at once with the
        error and leaves the clean-up (about 2 s for a server that ignores its closed stdin)
        running: ``close()`` waits for it."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._task = asyncio.create_task(self._own(ready), name=f"mcp:{self.config.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.startup_timeout_s)
        except TimeoutError:
            ready.cancel()
            self._abort()
            raise StartError(
                f"no answer within {self.startup_timeout_s:g} s{self.stderr_note()}"
            ) from None
        except asyncio.CancelledError:
            ready.cancel()
            await self.close()
            raise

    def _abort(self) -> None:
        self._stopping = True
        self._wake.set()
        if not self.started:
            if self._scope is not None:
                self._scope.cancel()
            self._terminate_launcher()

    def _terminate_launcher(self) -> None:
        """A server that never became ready gets no grace period: its launcher's process group
        is sent SIGTERM now (the SDK's stop would first wait 2 s for an exit on closed stdin,
        which a server stuck before its loop never notices)."""
        if self.config.transport != "stdio" or not sys.platform.startswith("linux"):
            return
        import psutil

        for proc in psutil.Process().children():
            try:
                if self.tag in proc.cmdline():
                    os.killpg(proc.pid, signal.SIGTERM)
            except (psutil.Error, OSError):
                continue

    async def close(self) -> None:
        """End the connection and its server; returns once the owner task is done."""
        self._abort()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
            if not done:  # the SDK's bounded clean-up did not finish: cut it
                task.cancel()
                await asyncio.wait({task}, timeout=2.0)
        if self._errlog is not None:
            with contextlib.suppress(OSError):
                self._errlog.close()

    async def _own(self, ready: asyncio.Future[None]) -> None:
        failure: BaseException | None = None
        timed_out = False
        try:
            # ``open()`` times the start; this deadline only backs it up.
            deadline = anyio.current_time() + self.startup_timeout_s + 5
            with anyio.CancelScope(deadline=deadline) as scope:
                self._scope = scope
                if self._stopping:
                    scope.cancel()
                async with contextlib.AsyncExitStack() as stack:
                    t0 = time.perf_counter()
                    read, write = await stack.enter_async_context(self._transport(stack))
                    inbound = InboundStream(
                        read, on_end=self._wake.set, on_problem=self._on_problem
                    )
                    session = await stack.enter_async_context(
                        ClientSession(inbound, write, client_info=CLIENT_INFO)  # type: ignore[arg-type]
                    )
                    await session.initialize()
                    self.listing = await _list_all(session)
                    self.start_ms = (time.perf_counter() - t0) * 1000
                    scope.deadline = math.inf
                    self.session = session
                    self.started = True
                    _settle(ready)
                    await self._wake.wait()
                    self.session = None
            timed_out = scope.cancelled_caught and not self.started and not self._stopping
        except Exception as exc:
            failure = exc
        finally:
            self.session = None
            self.ended.set()
            if not ready.done():
                if timed_out:
                    reason = f"no answer within {self.startup_timeout_s:g} s"
                elif failure is not None:
                    reason = describe_failure(failure, self.config)
                else:
                    reason = "stopped before it was ready"
                _settle(ready, StartError(reason + self.stderr_note()))
            if self.started and not self._stopping:
                self._on_closed(self)

    def _transport(self, stack: contextlib.AsyncExitStack) -> AbstractAsyncContextManager[Any]:
        cfg = self.config
        if cfg.transport == "stdio":
            from mcp.client.stdio import StdioServerParameters, stdio_client

            command = resolve_command(cfg.command, self.cwd, self.env)
            if command is None:
                raise StartError(f"command not found: {cfg.command}")
            argv = [command, *cfg.args]
            if sys.platform.startswith("linux"):
                argv = [
                    sys.executable,
                    "-I",
                    "-S",
                    str(LAUNCHER),
                    str(os.getpid()),
                    self.tag,
                    *argv,
                ]
            self._errlog = open(self.stderr_path, "w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            params = StdioServerParameters(
                command=argv[0], args=argv[1:], env=self.env, cwd=str(self.cwd)
            )
            return stdio_client(params, errlog=self._errlog)
        if cfg.transport == "sse":
            from mcp.client.sse import sse_client

            return sse_client(cfg.url, headers=dict(cfg.headers) or None)
        return _http(cfg)

    # -- facts for messages ------------------------------------------------------------------

    def stderr_tail(self, lines: int = 3, limit: int = 300) -> str:
        """The last lines the server wrote to stderr, as one line."""
        try:
            with open(self.stderr_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 4096))
                data = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        kept = [ln.strip() for ln in data.splitlines() if ln.strip()][-lines:]
        text = " | ".join(kept)
        return text if len(text) <= limit else "…" + text[-limit:]

    def stderr_note(self) -> str:
        tail = self.stderr_tail()
        return f" (stderr: {tail})" if tail else ""


@contextlib.asynccontextmanager
async def _http(cfg: ServerConfig) -> AsyncIterator[Any]:
    """Streamable HTTP with the configured headers (the SDK takes them on its HTTP client)."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    client = httpx2.AsyncClient(headers=dict(cfg.headers), timeout=httpx2.Timeout(30.0, read=None))
    transport = streamable_http_client(
        cfg.url, http_client=client, max_sse_event_size=MAX_HTTP_MESSAGE_BYTES
    )
    async with client, transport as streams:
        yield streams


async def _list_all(session: ClientSession) -> Listing:
    caps = session.server_capabilities
    listing = Listing()
    if caps is None or caps.tools is not None:
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            listing.tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
    if caps is not None and caps.prompts is not None:
        with contextlib.suppress(Exception):  # a broken listing costs the prompts, not the server
            cursor = None
            while True:
                params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                prompts = await session.list_prompts(params=params)
                listing.prompts += prompts.prompts
                cursor = prompts.next_cursor
                if not cursor:
                    break
    if caps is not None and caps.resources is not None:
        listing.has_resources = True
        with contextlib.suppress(Exception):
            listing.resources = (await session.list_resources()).resources
    return listing


def resolve_command(command: str, cwd: Path, env: dict[str, str]) -> str | None:
    """The executable ``command`` names (searched in the server's PATH), or ``None``."""
    if os.sep in command:
        path = command if os.path.isabs(command) else str(cwd / command)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(command, path=env.get("PATH", os.defpath))


def describe_failure(exc: BaseException, cfg: ServerConfig) -> str:
    """One line for why a start failed: the innermost cause, in words."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, StartError):
        return str(exc)
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, MCPError):
        if exc.code == types.CONNECTION_CLOSED:
            return "exited (or closed the connection) during start-up"
        return f"refused to start: {exc.message}"
    if isinstance(exc, FileNotFoundError | PermissionError) and cfg.transport == "stdio":
        return f"cannot run {cfg.command}: {exc.strerror}"
    name = type(exc).__name__
    if "Connect" in name or isinstance(exc, ConnectionError):
        return f"cannot connect to {cfg.url}: {exc or name}"
    if "HTTPStatusError" in name:
        return f"{cfg.url} answered {exc}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{name}: {text}" if text else name


def _settle(future: asyncio.Future[None], exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
