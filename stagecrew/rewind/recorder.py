"""The agent's side of rewind: which moments get a point, and how a failure is reported.

Points are taken before every turn of the primary agent and before every tool call that may
change the workspace: a built-in tool that is not read-only (``write``, ``edit``,
``apply_patch``, ``bash``, ``git``, ``task`` ...) and any other provider's tool not declared
read-only (an MCP tool counts as read-only only with ``readOnlyHint``). None are taken in plan
mode (read-only), by Max Mode candidates (their worktrees are thrown away; Max Mode takes its
own point before applying the winner), or by an agent outside a session on disk (nothing
could list them).

The point before a turn is taken in the background while the model is asked (a workspace's
very first point reads every file); the first tool call of the turn waits for it. A point that
cannot be taken is a warning ``Notice``, never a failed tool call; a warning repeats only
when the cause changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from stagecrew.messages import ActorRole, Message, Notice
from stagecrew.oneline import one_line
from stagecrew.rewind.points import TURN, Point
from stagecrew.rewind.store import RewindStore
from stagecrew.tools.providers import BuiltinTools, ToolSet


class _Spec(Protocol):
    """What the recorder reads of an ``AgentSpec`` (structural, so this library does not
    depend on the actors package)."""

    session: str
    actor_id: str
    role: ActorRole
    workspace: str
    prompt: str
    read_only: bool
    session_dir: str | None


class _Sink(Protocol):
    def emit(self, body: Message) -> None: ...


def is_mutating(tools: ToolSet, name: str) -> bool:
    """May this tool change the workspace? Unknown means yes.

    ``ToolSpec.read_only`` is not enough for built-in tools: it is also true for the ones that
    confine themselves in plan mode (bash, git, task), which write freely in build mode, so
    the tool's own ``read_only`` decides for those."""
    provider = tools.providers.get(name)
    if isinstance(provider, BuiltinTools):
        tool = provider.tools.get(name)
        return tool is None or not tool.read_only
    spec = tools.specs.get(name)
    return spec is None or not spec.read_only


def describe_call(name: str, arguments: dict[str, Any]) -> str:
    """A short label for a point: the argument that says what the call is about."""
    for key in ("command", "file_path", "path", "url", "description", "prompt"):
        value = arguments.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())[:120]
    return ""


class RewindRecorder:
    """Takes one agent's rewind points (``Agent`` holds one and calls it twice)."""

    def __init__(
        self,
        spec: _Spec,
        tools: ToolSet,
        events: _Sink,
        *,
        store: RewindStore | None = None,
    ) -> None:
        self.spec = spec
        self.tools = tools
        self.events = events
        self.enabled = (
            spec.session_dir is not None
            and not spec.read_only
            and spec.role not in (ActorRole.CANDIDATE,)
        )
        self.store = store if store is not None else RewindStore(spec.workspace)
        self.points: list[Point] = []
        self._pending: asyncio.Task[None] | None = None
        self._last_warning = ""

    def before_turn(self) -> None:
        """Start the point before this turn (primary agent only); it completes in the
        background, and the turn's first tool call waits for it."""
        if not self.enabled or self.spec.role != ActorRole.PRIMARY:
            return
        first_line = (self.spec.prompt.strip().splitlines() or [""])[0]
        self._pending = asyncio.ensure_future(self._take(TURN, first_line[:120], step=0))

    async def before_tool(
        self, name: str, arguments: dict[str, Any], *, step: int, call_id: str
    ) -> None:
        """Take the point before a tool call that may change the workspace."""
        if not self.enabled or not is_mutating(self.tools, name):
            return
        await self.settle()
        await self._take(name, describe_call(name, arguments), step=step, call_id=call_id)

    async def settle(self) -> None:
        """Wait for a point still being taken in the background."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await pending

    async def _take(self, tool: str, label: str, *, step: int, call_id: str = "") -> None:
        spec = self.spec
        try:
            point = await asyncio.to_thread(
                self.store.take,
                session=spec.session,
                actor=spec.actor_id,
                tool=tool,
                label=label,
                step=step,
                call_id=call_id,
            )
        except Exception as exc:  # a point is a safety net, never a reason for a call to fail
            self._warn(f"no rewind point before {tool}: {one_line(exc)}")
            return
        self.points.append(point)
        self._last_warning = ""

    def _warn(self, text: str) -> None:
        if text == self._last_warning:
            return
        self._last_warning = text
        self.events.emit(Notice(actor_id=self.spec.actor_id, level="warning", text=text))


__all__ = ["RewindRecorder", "describe_call", "is_mutating"]
