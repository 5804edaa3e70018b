"""The checkpoint writer as a Ray actor: one per session, created by the supervisor on first
use (``Supervisor.service(session, "checkpoint", model)``).

Why an actor of its own: its model calls take seconds and must never hold up the agent's
loop, and project ``MEMORY.md`` needs exactly one writer however many agents (primary,
subagents, candidates in other processes) save to it. Its model calls go through the node's
gateway exactly like an agent's (``RayModelPort``), and its events — ``CheckpointWritten``,
``ModelUsage``, warnings — go to the supervisor's log like any actor's, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import ray

from stagecrew.actors.checkpoint_writer import CheckpointWriter
from stagecrew.envutil import restore_process_env
from stagecrew.messages import Envelope, Message, ModelSpecWire
from stagecrew.orchestrator.model_port import RayModelPort


class _Poster:
    """Envelopes to ``supervisor.post``, one at a time, in order; ``flush`` waits for them.

    The writer emits a handful of events per update, so no batching; what matters is that a
    ``wait_idle`` caller (the agent, before its session closes) can be sure they are logged.
    """

    def __init__(self, session: str, sender: str) -> None:
        self.session = session
        self.sender = sender
        self._supervisor: Any = None
        self._queue: asyncio.Queue[Envelope] | None = None
        self._task: asyncio.Task[None] | None = None

    def emit(self, body: Message) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._drain())
        self._queue.put_nowait(Envelope(session=self.session, sender=self.sender, body=body))

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            env = await self._queue.get()
            try:
                supervisor = self._find_supervisor()
                if supervisor is not None:
                    await supervisor.post.remote([env])
            except Exception:  # the supervisor is gone: nothing to report to
                pass
            finally:
                self._queue.task_done()

    def _find_supervisor(self) -> Any:
        if self._supervisor is None:
            from stagecrew.orchestrator.names import SUPERVISOR_NAME

            with contextlib.suppress(Exception):
                namespace = ray.get_runtime_context().namespace
                self._supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=namespace)
        return self._supervisor

    async def flush(self, timeout_s: float) -> None:
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)


class CheckpointWriterHost:
    """Ray-facing wrapper; built by the supervisor as ``(session, workspace, session_dir,
    gateways, model)``."""

    def __init__(
        self,
        session: str,
        workspace: str,
        session_dir: str,
        gateways: list[Any],
        model: ModelSpecWire,
    ) -> None:
        restore_process_env()
        self.actor_id = f"{session}-checkpoint"
        self.poster = _Poster(session, self.actor_id)
        self.writer = CheckpointWriter(
            session,
            workspace,
            session_dir,
            RayModelPort(gateways),
            model,
            events=self.poster,
            actor_id=self.actor_id,
        )

    def ping(self) -> int:
        return os.getpid()

    async def request(self, reason: str, new_messages: list[dict[str, Any]], goal: str) -> None:
        await self.writer.request(reason, new_messages, goal)

    async def save_memory(self, section: str | None, text: str) -> dict[str, Any]:
        """``{"ok": True, "message": …}`` or ``{"ok": False, "error": …}``: a bad request is an
        answer for the model, not an exception wrapped in a Ray traceback."""
        try:
            return {"ok": True, "message": await self.writer.save_memory(section, text)}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}

    async def wait_idle(self, timeout_s: float = 60.0) -> bool:
        idle = await self.writer.wait_idle(timeout_s)
        await self.poster.flush(min(timeout_s, 10.0))
        return idle

    def history(self) -> list[dict[str, Any]]:
        """What each update did (for tests and ``crew ps``-style inspection)."""
        return [vars(r) for r in self.writer.history]
