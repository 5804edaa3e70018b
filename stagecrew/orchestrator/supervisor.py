"""The supervisor: one named, detached actor per Ray namespace.

It owns the actor tree and the sessions: spawns agents (from a warm pool of pre-started
hosts), appends every envelope to the session's ``events.jsonl`` (the single writer, so log
order is the one order), streams envelopes to attached CLIs over the control channel, answers
permission asks, and turns every way an actor can end — a result, a cancel, a crash — into an
explicit ``ActorFinished``/``ActorFailed`` and ``SessionFinished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import ray

from stagecrew import __version__
from stagecrew.actors.agent import AgentResult, AgentSpec
from stagecrew.envutil import restore_process_env
from stagecrew.messages import (
    TERMINAL_STATES,
    ActorFailed,
    ActorFinished,
    ActorStarted,
    ActorState,
    ActorStateChanged,
    Envelope,
    Heartbeat,
    Message,
    SessionFinished,
    SessionStarted,
    StopReason,
    TurnFinished,
    UserInput,
)
from stagecrew.orchestrator.eventlog import EventLog, session_dir

CANCEL_GRACE_S = 3.0


def _has_news(session: SessionRuntime, index: int) -> bool:
    return session.finished or index < len(session.lines)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


@dataclass
class ActorRecord:
    actor_id: str
    session: str
    role: str
    parent: str | None
    handle: Any
    state: ActorState = ActorState.PENDING
    started_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)
    steps: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    model: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def row(self) -> dict[str, Any]:
        return {
            "actor_id": self.actor_id,
            "session": self.session,
            "role": self.role,
            "parent": self.parent,
            "state": self.state.value,
            "elapsed_s": round(time.time() - self.started_at, 1),
            "steps": self.steps,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "rss_bytes": self.rss_bytes,
            "model": self.model,
        }


@dataclass
class SessionRuntime:
    session: str
    workspace: str
    log: EventLog
    lines: list[str] = field(default_factory=list)
    first_seq: int = 1
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    finished: bool = False
    started_at: float = field(default_factory=time.time)
    primary: str | None = None
    prompt: str = ""
    # Interactive sessions outlive each agent run: a run ends its turn, the person writes
    # again, and the next run continues the same transcript.
    interactive: bool = False
    transcript: list[dict[str, Any]] = field(default_factory=list)
    turn: int = 0
    last_result: AgentResult | None = None
    spec: AgentSpec | None = None


class Supervisor:
    def __init__(self, state_home: str, namespace: str = "stagecrew", pool_size: int = 2) -> None:
        restore_process_env()
        self.state_home = state_home
        self.namespace = namespace
        self.pool_size = pool_size
        self.token = secrets.token_urlsafe(24)
        self.sessions: dict[str, SessionRuntime] = {}
        self.actors: dict[str, ActorRecord] = {}
        self.permission_waiters: dict[tuple[str, str], asyncio.Future[str]] = {}
        self.pool: list[Any] = []
        self._pool_filling: asyncio.Task[None] | None = None
        self.gateway: Any = None
        self.server: asyncio.AbstractServer | None = None
        self.endpoint: dict[str, Any] = {}
        self.node_id = ray.get_runtime_context().get_node_id()

    # -- start-up ----------------------------------------------------------------------------

    async def start_control(self) -> dict[str, Any]:
        if self.server is not None:
            return self.endpoint
        from stagecrew.orchestrator.hosts import get_or_create_gateway

        host = ray.util.get_node_ip_address()
        self.server = await asyncio.start_server(
            self._serve, host=host, port=0, limit=64 * 1024 * 1024
        )
        port = self.server.sockets[0].getsockname()[1]
        self.endpoint = {"host": host, "port": port, "token": self.token, "pid": os.getpid()}
        self.gateway = get_or_create_gateway(self.node_id, self.namespace)
        self.gateway.warm_up.remote()  # in the background; requests queue behind it anyway
        self._refill_pool()
        return self.endpoint

    def _refill_pool(self) -> None:
        if self._pool_filling is None or self._pool_filling.done():
            self._pool_filling = asyncio.get_running_loop().create_task(self._fill_pool())

    async def _fill_pool(self) -> None:
        from stagecrew.orchestrator.hosts import start_agent_host

        while len(self.pool) < self.pool_size:
            host = start_agent_host()
            try:
                await host.ping.remote()
            except Exception:
                await asyncio.sleep(1.0)
                continue
            self.pool.append(host)

    def _take_host(self) -> tuple[Any, bool]:
        from stagecrew.orchestrator.hosts import start_agent_host

        if self.pool:
            host = self.pool.pop(0)
            self._refill_pool()
            return host, True
        self._refill_pool()
        return start_agent_host(), False

    def ping(self) -> dict[str, Any]:
        return {
            "ok": True,
            "version": __version__,
            "pid": os.getpid(),
            "sessions": len(self.sessions),
            "pool": len(self.pool),
        }

    # -- the log -----------------------------------------------------------------------------

    def _session_for(self, env: Envelope) -> SessionRuntime | None:
        return self.sessions.get(env.session)

    async def post(self, envelopes: list[Envelope]) -> None:
        """Agents report here; every envelope is logged in arrival order and streamed."""
        touched: set[str] = set()
        for env in envelopes:
            session = self._session_for(env)
            if session is None:
                continue
            self._track(env.body)
            self._append_nowait(session, env)
            touched.add(session.session)
        for sid in touched:
            await self._notify(self.sessions[sid])

    def _append_nowait(self, session: SessionRuntime, env: Envelope) -> None:
        session.log.append(env)
        session.lines.append(env.to_json())

    async def _notify(self, session: SessionRuntime) -> None:
        async with session.changed:
            session.changed.notify_all()

    async def _emit(
        self, session: SessionRuntime, body: Message, sender: str = "supervisor"
    ) -> None:
        self._track(body)
        self._append_nowait(
            session, Envelope(session=session.session, sender=sender, recipient="*", body=body)
        )
        await self._notify(session)

    def _track(self, body: Message) -> None:
        """Keep the actor tree's numbers current from the events flowing through."""
        actor_id = getattr(body, "actor_id", None)
        record = self.actors.get(actor_id) if actor_id else None
        if record is None:
            return
        if isinstance(body, Heartbeat):
            record.last_heartbeat = time.time()
            record.steps, record.tokens, record.cost_usd = body.steps, body.tokens, body.cost_usd
            record.rss_bytes, record.cpu_percent = body.rss_bytes, body.cpu_percent
        elif isinstance(body, ActorStateChanged):
            record.state = body.state

    # -- sessions ----------------------------------------------------------------------------

    async def start_session(
        self,
        spec: AgentSpec,
        credentials: dict[str, str],
        config: dict[str, Any],
        interactive: bool = False,
    ) -> str:
        sid = spec.session
        if sid in self.sessions and not self.sessions[sid].finished:
            raise ValueError(f"session {sid} is already running")
        sdir = session_dir(spec.workspace, sid)
        spec = spec.model_copy(update={"session_dir": str(sdir)})
        log = EventLog(sdir / "events.jsonl", secrets=list(credentials.values()))
        session = SessionRuntime(
            session=sid,
            workspace=spec.workspace,
            log=log,
            first_seq=log.seq + 1,
            prompt=spec.prompt,
            interactive=interactive,
            spec=spec,
        )
        self.sessions[sid] = session
        await self._emit(
            session,
            SessionStarted(
                prompt=spec.prompt,
                workspace=spec.workspace,
                profile=spec.profile,
                model=spec.model.model,
                config=config,
            ),
        )
        await self.gateway.register_credentials.remote(sid, credentials)
        if spec.prompt:
            session.primary = spec.actor_id
            await self._spawn(session, spec)
        return sid

    async def user_input(self, sid: str, text: str, spec: AgentSpec | None = None) -> str:
        """The person's next message in an interactive session: a new run of the primary
        agent that continues the transcript (with a new profile if they switched, e.g. plan)."""
        session = self.sessions.get(sid)
        if session is None or session.finished:
            raise KeyError(f"no open session '{sid}'")
        if session.primary and not self.actors[session.primary].state.terminal:
            raise RuntimeError(
                "the agent is still working on the previous message (cancel it first)"
            )
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
        run_spec = base.model_copy(
            update={"actor_id": actor_id, "prompt": text, "messages": messages, "session": sid}
        )
        session.spec = run_spec
        session.primary = actor_id
        await self._emit(session, UserInput(text=text), sender="person")
        await self._spawn(session, run_spec)
        return actor_id

    async def end_session(self, sid: str) -> None:
        session = self.sessions.get(sid)
        if session is None or session.finished:
            return
        if session.primary and not self.actors[session.primary].state.terminal:
            await self.cancel(sid, kill=False)
            await self.actors[session.primary].done.wait()
        result = session.last_result or AgentResult(
            actor_id=session.primary or sid, stop_reason=StopReason.DONE
        )
        await self._finish_session(session, result)

    async def _spawn(self, session: SessionRuntime, spec: AgentSpec) -> ActorRecord:
        host, from_pool = self._take_host()
        record = ActorRecord(
            actor_id=spec.actor_id,
            session=session.session,
            role=spec.role.value,
            parent=spec.parent,
            handle=host,
            model=spec.model.model,
        )
        self.actors[spec.actor_id] = record
        await self._emit(
            session,
            ActorStarted(
                actor_id=spec.actor_id,
                role=spec.role,
                parent=spec.parent,
                profile=spec.profile,
                model=spec.model.model,
                from_pool=from_pool,
            ),
        )
        me = ray.get_runtime_context().current_actor
        ref = host.run.remote(spec, me, self.gateway)
        await self._set_state(session, record, ActorState.RUNNING)
        asyncio.get_running_loop().create_task(self._watch(session, record, ref))
        return record

    async def _set_state(
        self, session: SessionRuntime, record: ActorRecord, state: ActorState, detail: str = ""
    ) -> None:
        record.state = state
        await self._emit(
            session, ActorStateChanged(actor_id=record.actor_id, state=state, detail=detail)
        )

    async def _watch(self, session: SessionRuntime, record: ActorRecord, ref: Any) -> None:
        """Wait for an actor's end, whatever it is, and record it explicitly."""
        try:
            result: AgentResult = await ref
            final = (
                ActorState.CANCELLED
                if result.stop_reason == StopReason.CANCELLED
                else ActorState.FINISHED
            )
            if record.state == ActorState.KILLED:
                final = ActorState.KILLED
            await self._emit(
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
            final = ActorState.KILLED if killed else ActorState.FAILED
            cause = type(exc).__name__
            message = (
                "killed after the cancel grace period"
                if killed
                else f"the actor process died: {_first_line(exc) or cause}"
            )
            await self._emit(
                session, ActorFailed(actor_id=record.actor_id, error=message, cause=cause)
            )
            reason = StopReason.CANCELLED if killed else StopReason.ERROR
            result = AgentResult(actor_id=record.actor_id, stop_reason=reason, error=message)
        await self._set_state(session, record, final)
        record.done.set()
        with contextlib.suppress(Exception):
            ray.kill(record.handle)  # a host serves one run; the pool provides fresh ones
        if record.actor_id == session.primary:
            session.last_result = result
            if result.messages:
                session.transcript = result.messages
            if session.interactive:
                await self._emit(
                    session,
                    TurnFinished(
                        actor_id=record.actor_id,
                        stop_reason=result.stop_reason,
                        summary=result.summary,
                        error=result.error,
                    ),
                )
            else:
                await self._finish_session(session, result)

    async def _finish_session(self, session: SessionRuntime, result: AgentResult) -> None:
        usage = result.usage
        await self._emit(
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
        session.finished = True
        session.log.close()
        await self._notify(session)
        with contextlib.suppress(Exception):
            await self.gateway.forget_session.remote(session.session)

    # -- cancellation ------------------------------------------------------------------------

    async def cancel(self, target: str, kill: bool = False) -> list[str]:
        """Cancel a session (all its actors) or one actor; children before parents."""
        if target in self.sessions:
            ids = [a.actor_id for a in self.actors.values() if a.session == target]
        elif target in self.actors:
            ids = [target]
        else:
            raise KeyError(f"no session or actor '{target}'")
        ordered = sorted(ids, key=lambda a: self._depth(a), reverse=True)
        cancelled = []
        for actor_id in ordered:
            record = self.actors[actor_id]
            if record.state in TERMINAL_STATES:
                continue
            cancelled.append(actor_id)
            if kill:
                await self._kill(record)
            else:
                with contextlib.suppress(Exception):
                    await record.handle.cancel.remote()
                asyncio.get_running_loop().create_task(self._kill_after_grace(record))
        return cancelled

    def _depth(self, actor_id: str) -> int:
        depth, cur = 0, self.actors.get(actor_id)
        while cur is not None and cur.parent:
            depth += 1
            cur = self.actors.get(cur.parent)
        return depth

    async def _kill_after_grace(self, record: ActorRecord) -> None:
        try:
            await asyncio.wait_for(record.done.wait(), timeout=CANCEL_GRACE_S)
        except TimeoutError:
            await self._kill(record)

    async def _kill(self, record: ActorRecord) -> None:
        record.state = ActorState.KILLED
        with contextlib.suppress(Exception):
            ray.kill(record.handle, no_restart=True)

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

    # -- the control channel -----------------------------------------------------------------

    def ps(self, session: str | None = None) -> list[dict[str, Any]]:
        return [r.row() for r in self.actors.values() if session is None or r.session == session]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if not line:
                return
            try:
                req = json.loads(line)
            except json.JSONDecodeError:
                await self._reply(writer, {"ok": False, "error": "request is not JSON"})
                return
            if not secrets.compare_digest(str(req.get("token", "")), self.token):
                await self._reply(writer, {"ok": False, "error": "bad token"})
                return
            op = req.get("op")
            try:
                if op == "follow":
                    await self._follow(writer, req["session"], int(req.get("after_seq", 0)))
                    return
                reply = await self._handle(op, req)
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            await self._reply(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _reply(self, writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(json.dumps(obj).encode() + b"\n")
        await writer.drain()

    async def _handle(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        if op == "ping":
            return self.ping()
        if op == "start_session":
            spec = AgentSpec.model_validate(req["spec"])
            sid = await self.start_session(
                spec,
                req.get("credentials", {}),
                req.get("config", {}),
                interactive=bool(req.get("interactive", False)),
            )
            return {"ok": True, "session": sid}
        if op == "user_input":
            spec = AgentSpec.model_validate(req["spec"]) if req.get("spec") else None
            actor_id = await self.user_input(req["session"], req["text"], spec)
            return {"ok": True, "actor_id": actor_id}
        if op == "end_session":
            await self.end_session(req["session"])
            return {"ok": True}
        if op == "cancel":
            ids = await self.cancel(req["target"], kill=bool(req.get("kill", False)))
            return {"ok": True, "cancelled": ids}
        if op == "ps":
            return {
                "ok": True,
                "actors": self.ps(req.get("session")),
                "sessions": self._session_rows(),
            }
        if op == "permission_reply":
            self.answer_permission(req["session"], req["request_id"], req["decision"])
            return {"ok": True}
        if op == "session_info":
            s = self.sessions.get(req["session"])
            if s is None:
                return {"ok": False, "error": f"unknown session {req['session']}"}
            return {"ok": True, "workspace": s.workspace, "finished": s.finished}
        if op == "shutdown":
            for sid, s in list(self.sessions.items()):
                if not s.finished:
                    with contextlib.suppress(Exception):
                        await self.cancel(sid, kill=True)
            return {"ok": True}
        return {"ok": False, "error": f"unknown op '{op}'"}

    def _session_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "session": s.session,
                "workspace": s.workspace,
                "finished": s.finished,
                "elapsed_s": round(time.time() - s.started_at, 1),
                "prompt": s.prompt[:80],
            }
            for s in self.sessions.values()
        ]

    async def _follow(self, writer: asyncio.StreamWriter, sid: str, after_seq: int) -> None:
        session = self.sessions.get(sid)
        if session is None:
            await self._reply(writer, {"ok": False, "error": f"unknown session {sid}"})
            return
        index = max(0, after_seq - session.first_seq + 1)
        while True:
            while index < len(session.lines):
                writer.write(session.lines[index].encode() + b"\n")
                index += 1
            await writer.drain()
            if session.finished and index >= len(session.lines):
                await self._reply(writer, {"end": True, "session": sid})
                return
            async with session.changed:
                await session.changed.wait_for(partial(_has_news, session, index))
