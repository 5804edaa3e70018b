"""Per-session service actors: the checkpoint writer, the judge and the MCP servers.

Services are actors like agents (own process, ``num_cpus=0``, in the tree and in ``crew
ps``), but they serve requests instead of running a loop. There is one per session and kind,
stopped with its session, and every transition is a ``ServiceEvent`` in the session's log:
starting, running (with what came up and how long it took), restarted, failed, stopped.

Two restart policies, both "once":

* model services (checkpoint writer, judge) keep their state in the session's files, so Ray
  restarts a dead one a single time and retries the call it was serving; the new process
  reads the same files;
* tool services (MCP) are bound to their session after they start (a warm spare takes the
  session when one is needed), so Ray could only restart them unbound. The supervisor does
  it: a caller that finds the actor dead asks again with ``failed=True`` and gets a new one,
  once per session; the second death is final and the event says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from stagecrew.messages import ActorRole, ActorStarted, ActorState, ModelSpecWire, ServiceEvent
from stagecrew.oneline import one_line
from stagecrew.orchestrator.eventlog import session_dir
from stagecrew.orchestrator.sessions import EventHub, SessionRuntime
from stagecrew.orchestrator.tree import ActorRecord, ActorTree


@dataclass(frozen=True)
class ServiceKind:
    module: str
    cls: str
    role: str
    # Bound after start (``bind``), restarted by the supervisor, kept warm as a spare.
    tool: bool = False
    # Called (with the stop timeout) before the actor is killed at the session's end: what
    # it is doing must finish (a checkpoint being written) or end cleanly (server processes).
    drain: str | None = None


SERVICES: dict[str, ServiceKind] = {
    "checkpoint": ServiceKind(
        "stagecrew.orchestrator.checkpoint_host",
        "CheckpointWriterHost",
        "checkpoint-writer",
        drain="wait_idle",
    ),
    "judge": ServiceKind("stagecrew.orchestrator.judge_host", "JudgeHost", "judge"),
    # Tool services: built with the provider's options instead of a model.
    "mcp": ServiceKind(
        "stagecrew.orchestrator.mcp_host", "McpHost", "mcp", tool=True, drain="stop"
    ),
}
STOP_TIMEOUT_S = 15.0  # a checkpoint's model call, or the servers' orderly exit
HEALTH_EVERY_S = 5.0  # tool services are pinged this often; a dead one is replaced at once
PING_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)
RESTARTS = 1  # per session and tool service
SPARE_DELAY_S = 1.5  # a spare starts a moment after a take, not during the start it serves


class ServiceUnavailable(RuntimeError):
    """The session's service of this kind died more often than it may be restarted."""


class SessionServices:
    def __init__(
        self, tree: ActorTree, hub: EventHub, gateways: Callable[[], list[Any]], node_id: str
    ) -> None:
        self.tree = tree
        self.hub = hub
        self.gateways = gateways
        self.node_id = node_id
        self._handles: dict[tuple[str, str], Any] = {}
        self._restarts: dict[tuple[str, str], int] = {}
        self._spares: dict[str, Any] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._options: dict[tuple[str, str], ModelSpecWire | dict[str, Any]] = {}
        self._gone: set[tuple[str, str]] = set()  # died for good (reported once)
        self._last_health = 0.0
        self._checking = False

    # -- getting one -------------------------------------------------------------------------

    async def get(
        self,
        session_id: str,
        kind: str,
        model: ModelSpecWire | dict[str, Any],
        failed: Any = None,
    ) -> Any:
        """The session's service of this kind, created on first use. ``model`` is the model
        a checkpoint writer or judge uses, or a tool service's options. ``failed`` is a
        handle the caller found dead: a tool service is then replaced (once)."""
        key = (session_id, kind)
        current = self._handles.get(key)
        if current is not None and (failed is None or not _same_actor(current, failed)):
            return current
        session = self.hub.get(session_id)
        if session is None or kind not in SERVICES:
            raise KeyError(f"no session '{session_id}' or no service '{kind}'")
        service = SERVICES[kind]
        if current is not None:  # the caller saw it die
            if not service.tool:
                return current  # Ray restarts model services itself
            return await self._restart(session, kind, model)
        return await self._create(session, kind, model)

    def start_early(self, session_id: str, kind: str, options: dict[str, Any]) -> None:
        """Start the session's tool service now, so it is ready when the agent asks."""
        if kind in SERVICES and (session_id, kind) not in self._handles:
            self._spawn_task(self.get(session_id, kind, options))

    async def _create(
        self, session: SessionRuntime, kind: str, model: ModelSpecWire | dict[str, Any]
    ) -> Any:
        service = SERVICES[kind]
        handle = self._new_handle(session, kind, model)
        self._handles[(session.session, kind)] = handle  # before any await: one per session
        self._options[(session.session, kind)] = model
        actor_id = f"{session.session}-{kind}"
        model_name = model.model if isinstance(model, ModelSpecWire) else ""
        self.tree.add(
            ActorRecord(
                actor_id=actor_id,
                session=session.session,
                role=service.role,
                parent=session.primary,
                handle=handle,
                model=model_name,
                state=ActorState.RUNNING,
            )
        )
        await self.hub.emit(
            session,
            ActorStarted(
                actor_id=actor_id,
                role=ActorRole(service.role),
                model=model_name,
                node_id=session.remote_node or self.node_id,
            ),
        )
        if service.tool:
            await self.hub.emit(
                session, ServiceEvent(service=kind, state="starting", detail=f"{kind} starting")
            )
            self._spawn_task(self._report_ready(session, kind, handle))
        else:
            await self.hub.emit(
                session,
                ServiceEvent(service=kind, state="running", detail=f"{service.role} started"),
            )
        return handle

    def _new_handle(
        self, session: SessionRuntime, kind: str, model: ModelSpecWire | dict[str, Any]
    ) -> Any:
        service = SERVICES[kind]
        workspace = session.workspace
        where: dict[str, Any] = {}
        if session.remote_node and service.tool:
            # The servers work on the clone the agent works on, on that node.
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            where = {
                "scheduling_strategy": NodeAffinitySchedulingStrategy(
                    session.remote_node, soft=False
                )
            }
            workspace = session.remote_path or workspace
            if isinstance(model, dict):
                model = {**model, "project_root": workspace}
        directory = str(session_dir(session.workspace, session.session))
        if service.tool and not where:
            spare = self._spares.pop(kind, None)
            self._refill_spare(kind)
            if spare is not None:
                spare.bind.remote(session.session, workspace, directory, model)
                return spare
        cls = getattr(importlib.import_module(service.module), service.cls)
        handle = ray.remote(cls).options(
            num_cpus=0,
            max_concurrency=16,
            max_restarts=0 if service.tool else 1,
            max_task_retries=0 if service.tool else 1,
            **where,
        )
        if service.tool:
            handle = handle.remote()
            handle.bind.remote(session.session, workspace, directory, model)
            return handle
        return handle.remote(session.session, workspace, directory, self.gateways(), model)

    async def _report_ready(self, session: SessionRuntime, kind: str, handle: Any) -> None:
        """One event when a tool service is up: what started and how long it took."""
        try:
            ready = await handle.ready.remote()
        except Exception as exc:
            if not session.finished and self._handles.get((session.session, kind)) is handle:
                await self.hub.emit(
                    session,
                    ServiceEvent(service=kind, state="failed", detail=one_line(exc, last=True)),
                )
            return
        if session.finished:
            return
        detail = f"{ready['running']} of {ready['servers']} servers up in {ready['ms']} ms"
        await self.hub.emit(session, ServiceEvent(service=kind, state="running", detail=detail))

    async def _restart(
        self, session: SessionRuntime, kind: str, model: ModelSpecWire | dict[str, Any]
    ) -> Any:
        key = (session.session, kind)
        old = self._handles.pop(key)
        with contextlib.suppress(Exception):
            ray.kill(old)
        done = self._restarts.get(key, 0)
        if done >= RESTARTS or session.finished:
            self._handles[key] = old  # later callers get the same answer
            if key not in self._gone and not session.finished:
                self._gone.add(key)
                await self.hub.emit(
                    session,
                    ServiceEvent(
                        service=kind,
                        state="failed",
                        detail=f"{kind} service died again after {done} restart(s); its "
                        "tools are unavailable for the rest of this session",
                    ),
                )
            raise ServiceUnavailable(
                f"the session's {kind} service died again; its tools are unavailable"
            )
        self._restarts[key] = done + 1
        await self.hub.emit(
            session,
            ServiceEvent(
                service=kind, state="restarted", detail=f"{kind} service died; starting it again"
            ),
        )
        return await self._create(session, kind, model)

    # -- health ------------------------------------------------------------------------------

    def check_health(self) -> None:
        """Called on every watchdog tick; every ``HEALTH_EVERY_S`` it pings the tool services
        in the background, so a dead one is replaced (and logged) before the agent's next
        call has to find out."""
        now = time.monotonic()
        if self._checking or now - self._last_health < HEALTH_EVERY_S:
            return
        self._last_health = now
        self._checking = True
        self._spawn_task(self._ping_all())

    async def _ping_all(self) -> None:
        from ray.exceptions import RayActorError

        try:
            for key, handle in list(self._handles.items()):
                if not SERVICES[key[1]].tool or key in self._gone:
                    continue
                try:
                    await asyncio.wait_for(handle.ping.remote(), PING_TIMEOUT_S)
                except RayActorError:
                    session = self.hub.get(key[0])
                    if session is None or session.finished or self._handles.get(key) is not handle:
                        continue
                    with contextlib.suppress(ServiceUnavailable):
                        await self._restart(session, key[1], self._options[key])
                except Exception:  # busy or slow: not dead; the next round looks again
                    continue
        finally:
            self._checking = False

    # -- spares ------------------------------------------------------------------------------

    def warm_spare(self, kind: str) -> None:
        """Keep one unbound tool service of this kind ready (its process started, its
        imports done), so the next session binds it instead of starting one."""
        self._refill_spare(kind, delay_s=0.0)

    def _refill_spare(self, kind: str, delay_s: float = SPARE_DELAY_S) -> None:
        if kind in self._spares:
            return

        async def start() -> None:
            await asyncio.sleep(delay_s)
            if kind in self._spares:
                return
            service = SERVICES[kind]
            cls = getattr(importlib.import_module(service.module), service.cls)
            handle = (
                ray.remote(cls).options(num_cpus=0, max_concurrency=16, max_restarts=0).remote()
            )
            self._spares[kind] = handle
            try:
                await handle.ping.remote()
            except Exception:
                if self._spares.get(kind) is handle:
                    self._spares.pop(kind, None)

        self._spawn_task(start())

    def spare_handles(self) -> list[Any]:
        return list(self._spares.values())

    # -- stopping ----------------------------------------------------------------------------

    async def stop(self, session_id: str) -> None:
        for (sid, kind), handle in list(self._handles.items()):
            if sid != session_id:
                continue
            self._handles.pop((sid, kind), None)
            self._restarts.pop((sid, kind), None)
            self._options.pop((sid, kind), None)
            self._gone.discard((sid, kind))
            record = self.tree.get(f"{sid}-{kind}")
            if record is not None:
                record.state = ActorState.FINISHED
                record.done.set()
            drain = SERVICES[kind].drain
            if drain is not None:
                with contextlib.suppress(Exception):
                    method = getattr(handle, drain)
                    args = (STOP_TIMEOUT_S - 1,) if drain == "wait_idle" else ()
                    await asyncio.wait_for(method.remote(*args), STOP_TIMEOUT_S)
            with contextlib.suppress(Exception):
                ray.kill(handle)
            session = self.hub.get(sid)
            if session is not None and not session.finished:  # before its stop record
                await self.hub.emit(session, ServiceEvent(service=kind, state="stopped"))

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # An early start that failed: the agent's own request will fail and say why.
            log.warning("service task failed: %s", one_line(task.exception()))


def _same_actor(a: Any, b: Any) -> bool:
    try:
        return bool(a._actor_id == b._actor_id)
    except AttributeError:
        return a is b
