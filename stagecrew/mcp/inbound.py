"""What comes in from a server, watched before the SDK's session sees it.

Two jobs, both on the transport's read stream (the SDK's ``ReadStream`` protocol, so the
session and its dispatcher are used unchanged):

* **End of stream.** A stdio server that exits closes its stdout; the stream ends. The owner of
  the connection is told at once, so a server that died between two calls is restarted before
  the next one instead of failing it.
* **Tool listings a model API would reject.** The SDK validates a ``tools/list`` result as a
  whole, so one tool without an ``inputSchema`` (or with one that is not an object schema)
  would cost every tool of the server; and a model API rejects a request whose function
  parameters are not a valid JSON schema, which would cost the whole session. Such a tool is
  kept with ``{"type": "object"}`` as its schema and a notice; a tool without a name is
  dropped with one.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage

EMPTY_SCHEMA: dict[str, Any] = {"type": "object"}


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` cannot be a tool's parameters schema, or ``None`` when it can."""
    if schema is None:
        return "no input schema"
    if not isinstance(schema, dict):
        return f"its input schema is a {type(schema).__name__}, not an object"
    if schema.get("type") != "object":
        return f"its input schema has type {schema.get('type')!r}, not 'object'"
    try:
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for
    except ImportError:  # pragma: no cover - jsonschema comes with the mcp SDK
        return None
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        return f"its input schema is invalid at {where}: {exc.message}"
    return None


class InboundStream:
    """A transport's read stream with end-of-stream and tool-listing repair hooked in."""

    def __init__(
        self,
        inner: Any,
        *,
        on_end: Callable[[], None],
        on_problem: Callable[[str], None],
    ) -> None:
        self._inner = inner
        self._on_end = on_end
        self._on_problem = on_problem

    async def receive(self) -> Any:
        try:
            item = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise
        return self._repair(item)

    def __aiter__(self) -> InboundStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise
        return self._repair(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> InboundStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc_val, exc_tb)

    def __getattr__(self, name: str) -> Any:
        # e.g. ``last_context``, which the dispatcher reads when the stream has it.
        return getattr(self._inner, name)

    def _repair(self, item: Any) -> Any:
        if not isinstance(item, SessionMessage):
            return item
        message = item.message
        if not isinstance(message, types.JSONRPCResponse):
            return item
        result = message.result
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return item
        kept = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                self._on_problem(f"tool entry {i} has no name; it is left out")
                continue
            problem = schema_problem(tool.get("inputSchema"))
            if problem is not None:
                tool["inputSchema"] = dict(EMPTY_SCHEMA)
                self._on_problem(
                    f"tool '{tool['name']}' has {problem}; it is offered without parameters"
                    if problem.startswith("no ")
                    else f"tool '{tool['name']}': {problem}; it is offered without parameters"
                )
            kept.append(tool)
        result["tools"] = kept
        return item
