"""Per-session service actors: the checkpoint writer and the judge.

Services are actors like agents (own process, ``num_cpus=0``, in the tree and in ``crew
ps``), but they serve requests instead of running a loop. Each is created on first use, one
per session and kind, built with ``(session, workspace, session_dir, gateways, model)``, and
stopped with its session. Their state lives in the session's files (checkpoint.md, the
task ledger, the workspace the judge verifies), so their restart policy is "once": Ray
restarts a dead service a single time and retries the call it was serving; the new process
reads the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Callable
from typing import Any

import ray

from stagecrew.messages import ActorRole, ActorStarted, ActorState, ModelSpecWire, ServiceEvent
from stagecrew.orchestrator.eventlog import session_dir
from stagecrew.orchestrator.sessions import EventHub
from stagecrew.orchestrator.tree import ActorRecord, ActorTree

# kind -> (module, class, actor role)
SERVICES: dict[str, tuple[str, str, str]] = {
    "checkpoint": (
        "stagecrew.orchestrator.checkpoint_host",
        "CheckpointWriterHost",
        "checkpoint-writer",
    ),
    "judge": ("stagecrew.orchestrator.judge_host", "JudgeHost", "judge"),
    # Tool services: built with the provider's options instead of a model.
    "mcp": ("stagecrew.orchestrator.mcp_host", "McpHost", "mcp"),
}
# Services that hold processes of their own get a ``stop()`` call before they are killed.
GRACEFUL = {"mcp"}
STOP_TIMEOUT_S = 10.0


class SessionServices:
    def __init__(
        self, tree: ActorTree, hub: EventHub, gateways: Callable[[], list[Any]], node_id: str
    ) -> None:
        self.tree = tree
        self.hub = hub
        self.gateways = gateways
        self.node_id = node_id
        self._handles: dict[tuple[str, str], Any] = {}

    async def get(self, session_id: str, kind: str, model: ModelSpecWire | dict[str, Any]) -> Any:
        """The session's service of this kind, created on first use. ``model`` is the model
        a checkpoint writer or judge uses, or a tool service's options."""
        key = (session_id, kind)
        if key in self._handles:
            return self._handles[key]
        session = self.hub.get(session_id)
        if session is None or kind not in SERVICES:
            raise KeyError(f"no session '{session_id}' or no service '{kind}'")
        module, cls_name, role = SERVICES[kind]
        cls = getattr(importlib.import_module(module), cls_name)
        handle = (
            ray.remote(cls)
            .options(num_cpus=0, max_concurrency=16, max_restarts=1, max_task_retries=1)
            .remote(
                session_id,
                session.workspace,
                str(session_dir(session.workspace, session_id)),
                self.gateways(),
                model,
            )
        )
        self._handles[key] = handle
        actor_id = f"{session_id}-{kind}"
        model_name = model.model if isinstance(model, ModelSpecWire) else ""
        self.tree.add(
            ActorRecord(
                actor_id=actor_id,
                session=session_id,
                role=role,
                parent=session.primary,
                handle=handle,
                model=model_name,
                state=ActorState.RUNNING,
            )
        )
        await self.hub.emit(
            session,
            ActorStarted(
                actor_id=actor_id, role=ActorRole(role), model=model_name, node_id=self.node_id
            ),
        )
        await self.hub.emit(
            session, ServiceEvent(service=kind, state="running", detail=f"{role} started")
        )
        return handle

    async def stop(self, session_id: str) -> None:
        for (sid, kind), handle in list(self._handles.items()):
            if sid != session_id:
                continue
            self._handles.pop((sid, kind), None)
            record = self.tree.get(f"{sid}-{kind}")
            if record is not None:
                record.state = ActorState.FINISHED
                record.done.set()
            if kind in GRACEFUL:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(handle.stop.remote(), STOP_TIMEOUT_S)
            with contextlib.suppress(Exception):
                ray.kill(handle)
            session = self.hub.get(sid)
            if session is not None and not session.finished:  # before its stop record
                await self.hub.emit(session, ServiceEvent(service=kind, state="stopped"))
