"""The supervisor: one named, detached actor per Ray namespace, composed of parts with one
job each.

* ``tree.ActorTree`` — who runs, under whom, in which state;
* ``sessions.EventHub`` — open sessions and their logs (the single writer) and followers;
* ``control_server.ControlServer`` — the typed line protocol the CLI and the chat speak;
* ``pool.HostPool`` — warm agent hosts; ``services.SessionServices`` — checkpoint writer
  and judge; ``watchdog.Watchdog`` — limits no agent enforces on itself;
* ``recovery`` — what a dead predecessor left: stop records in its logs, no process alive.

What stays here is the lifecycle of runs: start a session, spawn an actor, watch it to its
end whatever that end is, cancel a subtree, finish the session with a ``StopReason``.

Supervision policies (OTP's, chosen by what each child holds): the model gateways are
stateless — Ray restarts them and agents fail over to the node's other replica; an agent host
holds a run — when it dies its actor fails and the session stays resumable; services restart
once and read their state back from the session's files; the supervisor itself restarts
(``max_restarts=-1``), and before it answers anyone it ends what its predecessor left running,
in the logs and in the process table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import ray

from stagecrew import __version__
from stagecrew.actors.spec import AgentResult, AgentSpec
from stagecrew.envutil import restore_process_env
from stagecrew.messages import (
    ActorFailed,
    ActorFinished,
    ActorStarted,
    ActorState,
    ActorStateChanged,
    Envelope,
    ModelRequest,
    ModelRole,
    ModelSpecWire,
    ModelUsage,
    Notice,
    SessionFinished,
    SessionStarted,
    StopReason,
    TurnFinished,
    UserInput,
)
from stagecrew.oneline import one_line
from stagecrew.orchestrator import control_api as api
from stagecrew.orchestrator import recovery
from stagecrew.orchestrator.control_server import ControlServer
from stagecrew.orchestrator.eventlog import EventLog, ensure_state_ignored, session_dir
from stagecrew.orchestrator.hosts import add_standby_gateways, get_or_create_gateway
from stagecrew.orchestrator.model_port import RayModelPort, complete_text
from stagecrew.orchestrator.pool import HostPool
from stagecrew.orchestrator.procs import kill_actor_processes
from stagecrew.orchestrator.services import SERVICES, SessionServices
from stagecrew.orchestrator.sessions import EventHub, SessionLimits, SessionRuntime
from stagecrew.orchestrator.tree import CANCEL_GRACE_S, ActorRecord, ActorTree
from stagecrew.orchestrator.watchdog import Watchdog

SHUTDOWN_WAIT_S = 4.0


def _check_encodable(*values: Any) -> None:
    """Refuse text that cannot be written as UTF-8 (lone surrogates from undecodable bytes)
    before anything of the session exists."""
    for value in values:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                "the request holds text that is not valid UTF-8 (undecodable bytes near "
                f"position {exc.start}); re-encode the prompt as UTF-8 and try again"
            ) from exc


class Supervisor:
    def __init__(
        self,
        state_home: str,
        namespace: str = "stagecrew",
        pool_size: int = 2,
        cluster_address: str = "",
        token: str = "",
        port: int = 0,
    ) -> None:
        restore_process_env()
        import secrets

        # Which Ray cluster this is: restart recovery only touches this cluster's sessions.
        self.cluster_address = cluster_address
        self.state_home = Path(state_home)
        self.namespace = namespace
        # The token and port are given at creation, so a supervisor Ray restarts serves the
        # same endpoint and the CLI's head record stays true.
        self.token = token or secrets.token_urlsafe(24)
        self.port = port
        self.node_id = ray.get_runtime_context().get_node_id()
        self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.tree = ActorTree()
        self.hub = EventHub(self.tree.track)
        self.pool = HostPool(pool_size)
        self.services = SessionServices(
            self.tree, self.hub, lambda: self.gateways_for(self.node_id), self.node_id
        )
        self.control = ControlServer(self.token, self._handlers(), self.hub.follow)
        self.watchdog = Watchdog(self.tree, self.hub, self.cancel, self._kill, also=self._upkeep)
        self.permission_waiters: dict[tuple[str, str], asyncio.Future[str]] = {}
        self._gateways: dict[str, list[Any]] = {}
        self.recovered: list[str] = []
        self.endpoint: dict[str, Any] = {}
        self._started: asyncio.Future[dict[str, Any]] | None = None
        # A restarted supervisor has nobody to call start_control for it: it calls itself.
        with contextlib.suppress(Exception):
            ray.get_runtime_context().current_actor.start_control.remote()

    # -- start-up ----------------------------------------------------------------------------

    async def start_control(self) -> dict[str, Any]:
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        return await asyncio.shield(self._started)

    async def _start(self) -> dict[str, Any]:
        # Before answering anyone: end what a dead predecessor left (logs and processes).
        self.recovered = await asyncio.get_running_loop().run_in_executor(None, self._recover)
        host = ray.util.get_node_ip_address()
        port = await self.control.start(host, self.port)
        self.endpoint = {"host": host, "port": port, "token": self.token, "pid": os.getpid()}
        self.gateways_for(self.node_id)  # created now; each warms itself up in the background
        self.pool.refill()
        self.watchdog.start()
        return self.endpoint

    def _recover(self) -> list[str]:
        ended = recovery.recover(self.state_home, self.cluster_address, recovery.SUPERVISOR_RESTART)
        for cut, written in ended:
            log = EventLog(cut.log_path)
            log.close()
            session = SessionRuntime(
                session=cut.session,
                workspace=cut.workspace,
                log=log,
                lines=[env.to_json() for env in written],
                first_seq=written[0].seq if written else log.seq + 1,
                finished=True,
                started_at=cut.started_at or time.time(),
                prompt=cut.prompt,
            )
            self.hub.open(session)
            for actor in cut.actors.values():
                self.tree.add(
                    ActorRecord(
                        actor_id=actor.actor_id,
                        session=cut.session,
                        role=actor.role,
                        parent=actor.parent,
                        handle=None,
                        model=actor.model,
                        pid=actor.pid,
                        started_at=actor.started_at,
                        state=actor.state,
                    )
                )
        return [cut.session for cut, _ in ended]

    def gateways_for(self, node_id: str) -> list[Any]:
        """The node's gateway replicas started so far (the list grows as standbys come up;
        a run keeps the list it was given, which a failover reads as it is then)."""
        if node_id not in self._gateways:
            replicas = [get_or_create_gateway(node_id, self.namespace)]
            self._gateways[node_id] = replicas
            asyncio.get_running_loop().create_task(
                add_standby_gateways(node_id, self.namespace, replicas)
            )
        return self._gateways[node_id]

    async def _upkeep(self) -> None:
        self.pool.shrink_if_idle()
        self.services.check_health()

    def ping(self) -> dict[str, Any]:
        return {
            "ok": True,
            "version": __version__,
            "pid": os.getpid(),
            "restarted": self.restarted,
            "sessions": len(self.hub.sessions),
            "pool": len(self.pool.hosts),
            "pool_target": self.pool.target,
            "recovered": self.recovered,
        }

    async def pool_pids(self) -> list[int]:
        return await self.pool.pids()

    def credentials(self, session_id: str) -> dict[str, str]:
        """For a gateway that restarted since the session began (it lost what it was handed)."""
        session = self.hub.get(session_id)
        return dict(session.credentials) if session and not session.finished else {}

    async def post(self, envelopes: list[Envelope]) -> None:
        """Agents report here; every envelope is logged in arrival order and streamed."""
        await self.hub.post(envelopes)

    # -- sessions ----------------------------------------------------------------------------

    def open_session(
        self,
        spec: AgentSpec,
        credentials: dict[str, str],
        *,
        interactive: bool = False,
        limits: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> tuple[SessionRuntime, AgentSpec]:
        """Register a session and open its log (no agent yet); Max Mode opens its sessions
        here too, with its coordinator as the primary. Nothing is created for a request that
        cannot be logged."""
        sid = spec.session
        existing = self.hub.get(sid)
        if existing is not None and not existing.finished:
            raise ValueError(f"session {sid} is already running")
        _check_encodable(spec.model_dump(mode="python"), config or {})
        sdir = session_dir(spec.workspace, sid)
        try:
            ensure_state_ignored(spec.workspace)
            log = EventLog(sdir / "events.jsonl", secrets=list(credentials.values()))
        except OSError as exc:
            raise ValueError(
                f"cannot write the session log under {sdir.parent}: {exc.strerror or exc} "
                f"— make {Path(spec.workspace) / '.stagecrew'} writable for this user"
            ) from exc
        spec = spec.model_copy(update={"session_dir": str(sdir)})
        session = SessionRuntime(
            session=sid,
            workspace=spec.workspace,
            log=log,
            first_seq=log.seq + 1,
            prompt=spec.prompt,
            interactive=interactive,
            spec=spec,
            limits=SessionLimits(limits),
            transcript=list(spec.messages),
            credentials=dict(credentials),
        )
        self.hub.open(session)
        recovery.index_session(self.state_home, sid, spec.workspace, self.cluster_address)
        return session, spec

    async def register_credentials(self, session: SessionRuntime) -> None:
        """Hand the session's keys to every local gateway replica, without waiting: a replica
        still starting (or restarting) must not hold up the session, and one that serves a
        request before the keys arrive asks for them (``credentials``)."""
        for gateway in self.gateways_for(self.node_id):
            with contextlib.suppress(Exception):
                gateway.register_credentials.remote(session.session, session.credentials)

    async def start_session(
        self,
        spec: AgentSpec,
        credentials: dict[str, str],
        config: dict[str, Any],
        interactive: bool = False,
        limits: dict[str, Any] | None = None,
        placement: dict[str, Any] | None = None,
        auto_resume: int = 0,
    ) -> str:
        session, spec = self.open_session(
            spec, credentials, interactive=interactive, limits=limits, config=config
        )
        session.auto_resume_limit = auto_resume
        await self.hub.emit(
            session,
            SessionStarted(
                prompt=spec.prompt,
                workspace=spec.workspace,
                profile=spec.profile,
                model=spec.model.model,
                config=config,
                goal=spec.goal_spec.condition if spec.goal_spec else None,
            ),
        )
        await self.register_credentials(session)
        host = None
        if placement:
            from stagecrew.orchestrator.placement import place_remotely

            try:
                spec, host = await place_remotely(self.hub, session, spec, placement["resource"])
            except Exception as exc:
                await self.finish_session(
                    session,
                    AgentResult(
                        actor_id=spec.actor_id, stop_reason=StopReason.ERROR, error=str(exc)
                    ),
                )
                raise
        if spec.prompt or spec.messages:
            session.primary = spec.actor_id
            self._start_tool_services(session, spec)
            await self._spawn(session, spec, host=host)
        return session.session

    def _start_tool_services(self, session: SessionRuntime, spec: AgentSpec) -> None:
        """The session's tool services (its MCP servers) start now, while the agent host is
        being set up, instead of when the agent first asks for its tools."""
        for provider in spec.providers:
            if provider.kind in SERVICES and SERVICES[provider.kind].tool:
                self.services.start_early(session.session, provider.kind, provider.options)

    async def start_max_session(
        self,
        spec: AgentSpec,
        credentials: dict[str, str],
        config: dict[str, Any],
        limits: dict[str, Any] | None,
        max_spec: dict[str, Any],
    ) -> str:
        """Max Mode: N candidates on the same task in their own worktrees, the best verified
        patch applied. The coordination lives in ``maxmode.py``; this only hands it over."""
        from stagecrew.orchestrator.maxmode import MaxModeSpec, start_max_mode

        parsed = MaxModeSpec.model_validate(max_spec)
        return await start_max_mode(self, spec, credentials, config, limits, parsed)

    async def user_input(self, sid: str, text: str, spec: AgentSpec | None = None) -> str:
        """The person's next message in an interactive session: a new run of the primary
        agent that continues the transcript (with a new profile if they switched, e.g. plan)."""
        session = self.hub.get(sid)
        if session is None or session.finished:
            raise KeyError(f"no open session '{sid}'")
        primary = self.tree.get(session.primary)
        if primary is not None and not primary.state.terminal:
            raise RuntimeError(
                "the agent is still working on the previous message (cancel it first)"
            )
        _check_encodable(text)
        base = spec or session.spec
        assert base is not None
        session.turn += 1
        actor_id = f"{sid}-p{session.turn}"
        messages = list(session.transcript)
        if messages and messages[0].get("role") == "system":
            messages[0] = {"role": "system", "content": base.system_prompt}
        elif base.system_prompt:
            messages.insert(0, {"role": "system", "content": base.system_prompt})
        messages.append({"role": "user", "content": text})
        said = [
            m["content"]
            for m in messages
            if m.get("role") == "user"
            and isinstance(m.get("content"), str)
            and not m["content"].startswith("[stagecrew")
        ]
        run_spec = base.model_copy(
            update={
                "actor_id": actor_id,
                "prompt": text,
                "messages": messages,
                "session": sid,
                # The person's words so far are the checkpoint's Active intent, and this run
                # carries on the task tree the previous turn built.
                "goal": "\n\n".join(said),
                "adopt_tasks_from": [a for a in [session.primary] if a],
                "session_dir": str(session_dir(session.workspace, sid)),
            }
        )
        session.spec = run_spec
        session.primary = actor_id
        await self.hub.emit(session, UserInput(text=text), sender="person")
        await self._spawn(session, run_spec)
        return actor_id

    async def end_session(self, sid: str) -> None:
        session = self.hub.get(sid)
        if session is None or session.finished:
            return
        primary = self.tree.get(session.primary)
        running = primary is not None and not primary.state.terminal
        if running and primary is not None:
            await self.cancel(sid)
            await primary.done.wait()
        # The run's own result when it was just cancelled (``last_result`` is set a moment
        # after ``done``), else the last finished turn's.
        latest = primary.result if primary is not None else None
        result = (latest if running else None) or session.last_result or latest
        result = result or AgentResult(actor_id=sid, stop_reason=StopReason.DONE)
        await self.finish_session(session, result)

    async def spawn_child(self, spec: AgentSpec, description: str = "") -> str:
        """A subagent (or candidate) started by an agent: same log, same tree, own actor."""
        session = self.hub.get(spec.session)
        if session is None or session.finished:
            raise KeyError(f"no open session '{spec.session}'")
        parent = self.tree.get(spec.parent)
        if parent is not None and (parent.state.terminal or parent.stopping):
            raise RuntimeError(f"parent {spec.parent} is stopping; no new subagents")
        await self._spawn(session, spec, description)
        return spec.actor_id

    async def wait_actors(
        self, ids: list[str], timeout_s: float | None = None
    ) -> dict[str, dict[str, Any]]:
        """Results of the given actors; those still running after ``timeout_s`` say so."""
        records = [r for i in ids if (r := self.tree.get(i)) is not None]
        waits = [r.done.wait() for r in records if not r.done.is_set()]
        if waits and timeout_s != 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout=timeout_s)
        out: dict[str, dict[str, Any]] = {}
        for actor_id in ids:
            record = self.tree.get(actor_id)
            if record is None:
                out[actor_id] = {"stop_reason": "unknown", "error": "no such actor"}
            elif record.result is None:
                out[actor_id] = {"stop_reason": "running", "state": record.state.value}
            else:
                out[actor_id] = record.result.model_dump(mode="json", exclude={"messages"})
        return out

    # -- one run, from spawn to its logged end ------------------------------------------------

    async def _spawn(
        self, session: SessionRuntime, spec: AgentSpec, description: str = "", host: Any = None
    ) -> ActorRecord:
        placed = host is not None
        if host is None:
            host, from_pool = self.pool.take()
        else:
            from_pool = False
        record = self.tree.add(
            ActorRecord(
                actor_id=spec.actor_id,
                session=session.session,
                role=spec.role.value,
                parent=spec.parent,
                handle=host,
                spec=spec,
                description=description,
                model=spec.model.model,
            )
        )
        with contextlib.suppress(Exception):
            record.pid = await host.ping.remote()
        node = (session.remote_node if placed else None) or self.node_id
        await self.hub.emit(
            session,
            ActorStarted(
                actor_id=spec.actor_id,
                role=spec.role,
                parent=spec.parent,
                profile=spec.profile,
                model=spec.model.model,
                from_pool=from_pool,
                pid=record.pid,
                node_id=node,
            ),
        )
        me = ray.get_runtime_context().current_actor
        record.started_at = record.last_heartbeat = time.time()
        ref = host.run.remote(spec, me, self.gateways_for(node))
        await self._set_state(session, record, ActorState.RUNNING)
        asyncio.get_running_loop().create_task(self._watch(session, record, ref))
        return record

    async def _set_state(
        self, session: SessionRuntime, record: ActorRecord, state: ActorState, detail: str = ""
    ) -> None:
        record.state = state
        await self.hub.emit(
            session, ActorStateChanged(actor_id=record.actor_id, state=state, detail=detail)
        )

    async def _watch(self, session: SessionRuntime, record: ActorRecord, ref: Any) -> None:
        """Wait for an actor's end, whatever it is, and record it explicitly."""
        killed = False
        try:
            result: AgentResult = await ref
            final = (
                ActorState.CANCELLED
                if result.stop_reason == StopReason.CANCELLED
                else ActorState.FINISHED
            )
            await self.hub.emit(
                session,
                ActorFinished(
                    actor_id=record.actor_id,
                    stop_reason=result.stop_reason,
                    summary=result.summary,
                    steps=result.steps,
                    usage=result.usage,
                    error=result.error,
                ),
            )
        except Exception as exc:
            killed = record.state == ActorState.KILLED
            cause = type(exc).__name__
            if killed and record.stopping == "heartbeat":
                reason, message = StopReason.ERROR, "killed: no heartbeat (hung process)"
                final = ActorState.KILLED
            elif killed:
                reason = StopReason(record.stopping or StopReason.CANCELLED.value)
                message = record.kill_detail or (
                    f"killed: it did not stop within {CANCEL_GRACE_S:g} s of a cancel"
                )
                final = ActorState.KILLED
            else:
                reason = StopReason.ERROR
                message = (
                    f"the agent's process died ({cause}); `crew resume {session.session}` "
                    "continues the session"
                )
                final = ActorState.FAILED
            await self.hub.emit(
                session, ActorFailed(actor_id=record.actor_id, error=message, cause=cause)
            )
            result = AgentResult(actor_id=record.actor_id, stop_reason=reason, error=message)
        record.result = result
        await self._set_state(session, record, final)
        record.done.set()
        if record.handle is not None and not killed:
            with contextlib.suppress(Exception):
                ray.kill(record.handle)  # a host serves one run; the pool provides fresh ones
        # Whatever its tools started must not outlive it (also after a SIGKILL from outside).
        await asyncio.get_running_loop().run_in_executor(
            None, kill_actor_processes, record.actor_id
        )
        if record.actor_id != session.primary:
            return
        if final == ActorState.FAILED and await self._auto_resume(session):
            return
        if session.remote_path:
            from stagecrew.orchestrator.placement import bring_back_patch

            await bring_back_patch(self.hub, session)
        session.last_result = result
        if result.messages:
            session.transcript = result.messages
        if session.interactive and not session.finished:
            await self.hub.emit(
                session,
                TurnFinished(
                    actor_id=record.actor_id,
                    stop_reason=result.stop_reason,
                    summary=result.summary,
                    error=result.error,
                ),
            )
        else:
            await self.finish_session(session, result)

    async def _auto_resume(self, session: SessionRuntime) -> bool:
        """Continue a session whose agent process died, as ``crew resume`` would, when the
        person allowed it (``runtime.auto_resume``); False when it is not allowed or fails."""
        from stagecrew.actors.context import history_from_events, resumed_spec
        from stagecrew.orchestrator.eventlog import read_events

        allowed = (
            session.auto_resumes < session.auto_resume_limit
            and not session.interactive
            and not session.stopping
            and session.remote_path is None
            and session.spec is not None
        )
        if not allowed or session.spec is None:
            return False
        session.auto_resumes += 1
        base = session.spec.model_copy(update={"prompt": ""})

        def prepare() -> AgentSpec:
            history = history_from_events(read_events(session.log.path))
            return resumed_spec(base, history)[0]

        try:
            spec = await asyncio.get_running_loop().run_in_executor(None, prepare)
        except Exception as exc:
            await self.hub.emit(
                session,
                Notice(level="error", text=f"automatic resume failed: {one_line(exc)}"),
            )
            return False
        await self.hub.emit(
            session,
            Notice(
                level="warning",
                text=f"the agent's process died; resuming the session "
                f"({session.auto_resumes} of {session.auto_resume_limit} automatic resumes)",
            ),
        )
        session.primary = spec.actor_id
        await self._spawn(session, spec)
        return True

    async def finish_session(self, session: SessionRuntime, result: AgentResult) -> None:
        """Stop the session's services, write its stop record (once, the log's last line),
        release its followers."""
        if session.finished or session.finishing:
            return
        session.finishing = True
        # The services' last events (a checkpoint, a server stopping) land before the record.
        await self.services.stop(session.session)
        usage = result.usage
        tokens, cost = self.tree.usage(session.session)
        if tokens > usage.total_tokens:  # subagents' usage counts toward the session
            usage = usage.model_copy(
                update={
                    "prompt_tokens": tokens - usage.completion_tokens,
                    "cost_usd": max(cost, usage.cost_usd),
                }
            )
        await self.hub.emit(
            session,
            SessionFinished(
                stop_reason=result.stop_reason,
                summary=result.summary,
                steps=result.steps,
                usage=usage,
                error=result.error,
                duration_s=round(time.time() - session.started_at, 3),
            ),
        )
        await self.hub.close(session)
        session.credentials = {}
        for gateway in self.gateways_for(self.node_id):
            with contextlib.suppress(Exception):
                gateway.forget_session.remote(session.session)

    # -- services and the supervisor's own model calls ---------------------------------------

    async def service(self, session_id: str, kind: str, model: ModelSpecWire) -> Any:
        """The session's service actor of this kind (created on first use, one per session)."""
        return await self.services.get(session_id, kind, model)

    async def tool_service(
        self, session_id: str, kind: str, options: dict[str, Any], failed: Any = None
    ) -> Any:
        """The session's tool service of this kind (MCP servers), for a provider's proxy;
        ``failed`` is the handle the caller found dead (it is replaced, once)."""
        return await self.services.get(session_id, kind, options, failed)

    async def complete(
        self, session_id: str, actor_id: str, model: ModelSpecWire, messages: list[dict[str, Any]]
    ) -> str:
        """One non-tool model call through the gateway, for the supervisor's own decisions
        (Max Mode ranking); usage is logged like any agent's."""
        request = ModelRequest(
            session=session_id,
            actor_id=actor_id,
            role=ModelRole.JUDGE,
            spec=model,
            messages=messages,
        )
        done = await complete_text(RayModelPort(self.gateways_for(self.node_id)), request)
        session = self.hub.get(session_id)
        if session is not None:
            await self.hub.emit(
                session,
                ModelUsage(
                    actor_id=actor_id,
                    model=done.model,
                    usage=done.usage,
                    latency_ms=done.latency_ms,
                ),
            )
        return done.text

    # -- cancellation ------------------------------------------------------------------------

    async def cancel(
        self, target: str, kill: bool = False, reason: str = "cancelled", detail: str = ""
    ) -> list[str]:
        """Cancel a session (all its actors) or an actor and its subtree: children first,
        then parents; whatever has not stopped after a grace period is killed."""
        if self.hub.get(target) is not None:
            ids = [a.actor_id for a in self.tree.of_session(target)]
        elif target in self.tree:
            ids = [target, *self.tree.descendants(target)]
        else:
            raise KeyError(f"no session or actor '{target}'")
        cancelled = []
        for actor_id in sorted(ids, key=self.tree.depth, reverse=True):
            record = self.tree[actor_id]
            if not record.live:
                continue
            cancelled.append(actor_id)
            if record.stopping is None:
                record.stopping = reason
            if kill:
                record.kill_detail = record.kill_detail or detail or "killed on request"
                await self._kill(record)
                continue
            with contextlib.suppress(Exception):
                await record.handle.cancel.remote(reason, detail)
            asyncio.get_running_loop().create_task(self._kill_after_grace(record))
        return cancelled

    async def _kill_after_grace(self, record: ActorRecord) -> None:
        try:
            await asyncio.wait_for(record.done.wait(), timeout=CANCEL_GRACE_S)
        except TimeoutError:
            await self._kill(record)

    async def _kill(self, record: ActorRecord) -> None:
        if record.state.terminal:
            return
        record.state = ActorState.KILLED
        with contextlib.suppress(Exception):
            ray.kill(record.handle, no_restart=True)

    async def shutdown(self, reason: str) -> list[str]:
        """``crew down``: kill every running session, and make sure each log ends with its
        stop record before the head's processes are stopped."""
        open_sessions = self.hub.unfinished()
        for session in open_sessions:
            session.stopping = session.stopping or "cancelled"
            with contextlib.suppress(KeyError):
                await self.cancel(session.session, kill=True, reason="cancelled", detail=reason)
        waits = [r.done.wait() for s in open_sessions for r in self.tree.of_session(s.session)]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout=SHUTDOWN_WAIT_S)
        for session in open_sessions:
            await self.finish_session(
                session,
                AgentResult(
                    actor_id=session.primary or session.session,
                    stop_reason=StopReason.CANCELLED,
                    error=reason,
                ),
            )
        return [s.session for s in open_sessions]

    # -- permissions -------------------------------------------------------------------------

    def _waiter(self, session: str, request_id: str) -> asyncio.Future[str]:
        key = (session, request_id)
        if key not in self.permission_waiters:
            self.permission_waiters[key] = asyncio.get_running_loop().create_future()
        return self.permission_waiters[key]

    async def await_permission(self, session: str, request_id: str) -> str:
        try:
            return await self._waiter(session, request_id)
        finally:
            self.permission_waiters.pop((session, request_id), None)

    def answer_permission(self, session: str, request_id: str, decision: str) -> None:
        fut = self._waiter(session, request_id)
        if not fut.done():
            fut.set_result(decision)

    # -- the control channel: one handler per typed request -----------------------------------

    def ps(self, session: str | None = None) -> list[dict[str, Any]]:
        return self.tree.rows(session)

    def _handlers(self) -> dict[str, Any]:
        return {
            "ping": self._on_ping,
            "start_session": self._on_start_session,
            "start_max_session": self._on_start_max_session,
            "user_input": self._on_user_input,
            "end_session": self._on_end_session,
            "cancel": self._on_cancel,
            "ps": self._on_ps,
            "permission_reply": self._on_permission_reply,
            "session_info": self._on_session_info,
            "shutdown": self._on_shutdown,
        }

    async def _on_ping(self, _: api.Ping) -> dict[str, Any]:
        return self.ping()

    async def _on_start_session(self, req: api.StartSession) -> dict[str, Any]:
        sid = await self.start_session(
            req.spec,
            req.credentials,
            req.config,
            interactive=req.interactive,
            limits=req.limits,
            placement=req.placement,
            auto_resume=req.auto_resume,
        )
        return {"ok": True, "session": sid}

    async def _on_start_max_session(self, req: api.StartMaxSession) -> dict[str, Any]:
        sid = await self.start_max_session(
            req.spec, req.credentials, req.config, req.limits, req.max
        )
        return {"ok": True, "session": sid}

    async def _on_user_input(self, req: api.UserInput) -> dict[str, Any]:
        return {"ok": True, "actor_id": await self.user_input(req.session, req.text, req.spec)}

    async def _on_end_session(self, req: api.EndSession) -> dict[str, Any]:
        await self.end_session(req.session)
        return {"ok": True}

    async def _on_cancel(self, req: api.Cancel) -> dict[str, Any]:
        return {"ok": True, "cancelled": await self.cancel(req.target, kill=req.kill)}

    async def _on_ps(self, req: api.Ps) -> dict[str, Any]:
        rows = [s.row() for s in self.hub.sessions.values()]
        return {"ok": True, "actors": self.ps(req.session), "sessions": rows}

    async def _on_permission_reply(self, req: api.PermissionReply) -> dict[str, Any]:
        self.answer_permission(req.session, req.request_id, req.decision)
        return {"ok": True}

    async def _on_session_info(self, req: api.SessionInfo) -> dict[str, Any]:
        session = self.hub.get(req.session)
        if session is None:
            return {"ok": False, "error": f"unknown session {req.session}"}
        return {"ok": True, "workspace": session.workspace, "finished": session.finished}

    async def _on_shutdown(self, req: api.Shutdown) -> dict[str, Any]:
        return {"ok": True, "stopped": await self.shutdown(req.reason)}
