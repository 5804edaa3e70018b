"""The supervisor's side of the control channel: a line server on the node's address.

One connection carries one request. Whatever arrives — garbage, a JSON array, a line past
the size limit, nesting too deep to parse, a wrong token, an unknown operation, a field of
the wrong type — gets a one-line ``{"ok": false, "error": ...}`` reply, never a silent close
or a traceback in the worker log. Valid requests are dispatched by type to the handler the
supervisor registered for them; ``follow`` streams lines until the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from stagecrew.orchestrator.control_api import Follow, parse_request

LINE_LIMIT = 64 * 1024 * 1024
Handler = Callable[[Any], Awaitable[dict[str, Any]]]
Follower = Callable[[str, int], AsyncIterator[list[str]]]


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "request"
    return f"invalid request: {where}: {first.get('msg', 'invalid')}"


class ControlServer:
    def __init__(self, token: str, handlers: dict[str, Handler], follow: Follower) -> None:
        self.token = token
        self.handlers = handlers
        self.follow = follow
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int = 0) -> int:
        """Listen on ``host:port``; a taken port (another process got it meanwhile) falls back
        to any free one. Returns the port."""
        try:
            self.server = await asyncio.start_server(
                self._serve, host=host, port=port, limit=LINE_LIMIT
            )
        except OSError:
            if port == 0:
                raise
            self.server = await asyncio.start_server(
                self._serve, host=host, port=0, limit=LINE_LIMIT
            )
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._answer(reader, writer)
            if reply is not None:
                await _reply(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # never a traceback in the worker log for one bad request
            with contextlib.suppress(Exception):
                await _reply(writer, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any] | None:
        try:
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
            return {"ok": False, "error": f"request longer than {LINE_LIMIT:,} bytes"}
        if not line.strip():
            return None
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(data, dict):
            return {"ok": False, "error": "a request is a JSON object"}
        if not secrets.compare_digest(str(data.get("token", "")).encode(), self.token.encode()):
            return {"ok": False, "error": "bad token"}
        if data.get("op") not in self.handlers and data.get("op") != "follow":
            return {"ok": False, "error": f"unknown op '{data.get('op')}'"}
        try:
            request = parse_request(data)
        except ValidationError as exc:
            return {"ok": False, "error": _validation_message(exc)}
        if isinstance(request, Follow):
            return await self._stream(writer, request)
        try:
            return await self.handlers[request.op](request)
        except (KeyError, ValueError, RuntimeError) as exc:
            # A KeyError's str() is its repr (quoted); its argument is the sentence.
            text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            return {"ok": False, "error": text or type(exc).__name__}

    async def _stream(self, writer: asyncio.StreamWriter, request: Follow) -> dict[str, Any]:
        try:
            async for batch in self.follow(request.session, request.after_seq):
                writer.write("".join(line + "\n" for line in batch).encode())
                await writer.drain()
        except KeyError:
            return {"ok": False, "error": f"unknown session {request.session}"}
        return {"end": True, "session": request.session}

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def _reply(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(json.dumps(obj).encode() + b"\n")
    await writer.drain()
