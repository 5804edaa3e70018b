"""The supervisor: one named, detached actor per Ray namespace.

It owns the actor tree and the sessions: spawns agents (from a warm pool of pre-started
hosts), appends every envelope to the session's ``events.jsonl`` (the single writer, so log
order is the one order), streams envelopes to attached CLIs over the control channel, answers
permission asks, and turns every way an actor can end — a result, a cancel, a limit, a crash —
into an explicit ``ActorFinished``/``ActorFailed`` with a ``StopReason``. A watchdog enforces
wall time, token and cost budgets and heartbeats; when the supervisor itself restarts it
rebuilds the tree from the logs and marks what died with it.
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
from pathlib import Path
from typing import Any

import ray

from stagecrew import __version__
from stagecrew.actors.spec import AgentResult, AgentSpec
from stagecrew.envutil import restore_process_env
from stagecrew.messages import (
    ActorFailed,
    ActorFinished,
    ActorRole,
    ActorStarted,
    ActorState,
    ActorStateChanged,
    Envelope,
    Heartbeat,
    Message,
    ModelSpecWire,
    ModelUsage,
    Notice,
    SessionFinished,
    SessionStarted,
    StopReason,
    TurnFinished,
    UserInput,
)
from stagecrew.orchestrator.eventlog import (
    EventLog,
    ensure_state_ignored,
    read_events,
    session_dir,
)
from stagecrew.orchestrator.procs import kill_actor_processes

CANCEL_GRACE_S = 3.0
REFILL_DELAY_S = 1.5
POOL_MAX = 8
POOL_DECAY_S = 600.0

# Per-session service actors, created on first use: kind -> (module, class, actor role).
SERVICES: dict[str, tuple[str, str, str]] = {
    "checkpoint": (
        "stagecrew.orchestrator.checkpoint_host",
        "CheckpointWriterHost",
        "checkpoint-writer",
    ),
    "judge": ("stagecrew.orchestrator.judge_host", "JudgeHost", "judge"),
}
WATCHDOG_EVERY_S = 0.5


def _has_news(session: SessionRuntime, index: int) -> bool:
    return session.finished or index < len(session.lines)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


class SessionLimits:
    """Budgets for a whole session, across every actor in it."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.wall_time_s: float | None = data.get("wall_time_s")
        self.max_tokens: int | None = data.get("max_tokens")
        self.max_cost_usd: float | None = data.get("max_cost_usd")
        self.heartbeat_timeout_s: float = float(data.get("heartbeat_timeout_s") or 30.0)


@dataclass
class ActorRecord:
    actor_id: str
    session: str
    role: str
    parent: str | None
    handle: Any
    spec: AgentSpec | None = None
    description: str = ""
    state: ActorState = ActorState.PENDING
    started_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)
    steps: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    model: str = ""
    pid: int | None = None
    result: AgentResult | None = None
    stopping: str | None = None  # why the supervisor is stopping it (set once)
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
            "cpu_percent": self.cpu_percent,
            "model": self.model,
            "pid": self.pid,
            "description": self.description,
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
    limits: SessionLimits = field(default_factory=SessionLimits)
    # Interactive sessions outlive each agent run: a run ends its turn, the person writes
    # again, and the next run continues the same transcript.
    interactive: bool = False
    transcript: list[dict[str, Any]] = field(default_factory=list)
    turn: int = 0
    last_result: AgentResult | None = None
    spec: AgentSpec | None = None
    stopping: str | None = None
    # Work placed on another node: where, on which clone, from which commit.
    remote_node: str | None = None
    remote_path: str | None = None
    remote_base: str | None = None


class Supervisor:
    def __init__(
        self,
        state_home: str,
        namespace: str = "stagecrew",
        pool_size: int = 2,
        cluster_address: str = "",
    ) -> None:
        restore_process_env()
        # Which Ray cluster this is: restart recovery only touches this cluster's sessions.
        self.cluster_address = cluster_address
        self.state_home = Path(state_home)
        self.namespace = namespace
        self.pool_size = pool_size
        # The pool learns the fan-out people use: each miss raises the target by one (up to
        # POOL_MAX), and ten idle minutes bring it back to the configured size.
        self.pool_target = pool_size
        self.last_take = time.time()
        self.token = secrets.token_urlsafe(24)
        self.sessions: dict[str, SessionRuntime] = {}
        self.actors: dict[str, ActorRecord] = {}
        self.permission_waiters: dict[tuple[str, str], asyncio.Future[str]] = {}
        self.pool: list[Any] = []
        self._pool_filling: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.gateway: Any = None
        self.server: asyncio.AbstractServer | None = None
        self.endpoint: dict[str, Any] = {}
        self.node_id = ray.get_runtime_context().get_node_id()
        self.recovered: list[str] = []
        self.services: dict[tuple[str, str], Any] = {}
        self.remote_gateways: dict[str, Any] = {}

    # -- start-up ----------------------------------------------------------------------------

    async def start_control(self) -> dict[str, Any]:
        if self.server is not None:
            return self.endpoint
        from stagecrew.orchestrator.hosts import get_or_create_gateway

        self.recovered = self._recover_from_logs()
        host = ray.util.get_node_ip_address()
        self.server = await asyncio.start_server(
            self._serve, host=host, port=0, limit=64 * 1024 * 1024
        )
        port = self.server.sockets[0].getsockname()[1]
        self.endpoint = {"host": host, "port": port, "token": self.token, "pid": os.getpid()}
        self.gateway = get_or_create_gateway(self.node_id, self.namespace)
        self.gateway.warm_up.remote()  # in the background; requests queue behind it anyway
        self._refill_pool()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_limits())
        return self.endpoint

    def _refill_pool(self, delay_s: float = 0.0) -> None:
        if self._pool_filling is None or self._pool_filling.done():
            self._pool_filling = asyncio.get_running_loop().create_task(self._fill_pool(delay_s))

    async def _fill_pool(self, delay_s: float = 0.0) -> None:
        from stagecrew.orchestrator.hosts import start_agent_host

        # Starting a host costs about a second of CPU; on two cores, doing it at the very
        # moment a pooled host starts its work would slow that start down.
        await asyncio.sleep(delay_s)
        while len(self.pool) < self.pool_target:
            host = start_agent_host()
            try:
                await host.ping.remote()
            except Exception:
                await asyncio.sleep(1.0)
                continue
            self.pool.append(host)

    def _take_host(self) -> tuple[Any, bool]:
        from stagecrew.orchestrator.hosts import start_agent_host

        self.last_take = time.time()
        if self.pool:
            host = self.pool.pop(0)
            self._refill_pool(delay_s=REFILL_DELAY_S)
            return host, True
        self.pool_target = min(POOL_MAX, max(self.pool_target + 1, self.pool_size))
        self._refill_pool(delay_s=REFILL_DELAY_S)
        return start_agent_host(), False

    def _shrink_idle_pool(self) -> None:
        if self.pool_target > self.pool_size and time.time() - self.last_take > POOL_DECAY_S:
            self.pool_target = self.pool_size
            while len(self.pool) > self.pool_target:
                with contextlib.suppress(Exception):
                    ray.kill(self.pool.pop())

    def ping(self) -> dict[str, Any]:
        return {
            "ok": True,
            "version": __version__,
            "pid": os.getpid(),
            "sessions": len(self.sessions),
            "pool": len(self.pool),
            "pool_target": self.pool_target,
            "recovered": self.recovered,
        }

    def pool_pids(self) -> list[int]:
        return [ray.get(h.ping.remote()) for h in self.pool]

    # -- recovery after a restart ------------------------------------------------------------

    def _index_path(self) -> Path:
        return self.state_home / "sessions.jsonl"

    def _index_session(self, sid: str, workspace: str) -> None:
        self.state_home.mkdir(parents=True, exist_ok=True)
        with open(self._index_path(), "a", encoding="utf-8") as fh:
            entry = {
                "session": sid,
                "workspace": workspace,
                "cluster": self.cluster_address,
                "ts": time.time(),
            }
            fh.write(json.dumps(entry) + "\n")

    def _recover_from_logs(self) -> list[str]:
        """Rebuild the tree of every session a previous supervisor left unfinished; what was
        running died with it (its actors were owned by it), so say so in each log."""
        recovered: list[str] = []
        try:
            lines = self._index_path().read_text(encoding="utf-8").splitlines()
        except OSError:
            return recovered
        seen: dict[str, str] = {}
        for line in lines:
            with contextlib.suppress(ValueError, KeyError):
                entry = json.loads(line)
                if entry.get("cluster", "") == self.cluster_address:
                    seen[entry["session"]] = entry["workspace"]
        for sid, workspace in seen.items():
            path = session_dir(workspace, sid) / "events.jsonl"
            events = list(read_events(path))
            if not events or events[-1].body.kind == "session_finished":
                continue
            log = EventLog(path)
            session = SessionRuntime(
                session=sid, workspace=workspace, log=log, first_seq=log.seq + 1
            )
            self.sessions[sid] = session
            for env in events:
                self._replay(session, env)
            for record in [a for a in self.actors.values() if a.session == sid]:
                if record.state.terminal:
                    continue
                record.state = ActorState.FAILED
                self._log_now(
                    session,
                    ActorFailed(
                        actor_id=record.actor_id,
                        error="died with the supervisor (it restarted)",
                        cause="supervisor_restart",
                    ),
                )
            self._log_now(
                session,
                SessionFinished(
                    stop_reason=StopReason.ERROR,
                    error=f"the supervisor restarted while this session ran; "
                    f"`crew resume {sid}` continues it",
                ),
            )
            session.finished = True
            log.close()
            recovered.append(sid)
        return recovered

    def _replay(self, session: SessionRuntime, env: Envelope) -> None:
        body = env.body
        if isinstance(body, SessionStarted):
            session.prompt = body.prompt
            session.started_at = env.ts
        elif isinstance(body, ActorStarted):
            self.actors[body.actor_id] = ActorRecord(
                actor_id=body.actor_id,
                session=session.session,
                role=body.role.value,
                parent=body.parent,
                handle=None,
                model=body.model or "",
                pid=body.pid,
                started_at=env.ts,
            )
        elif isinstance(body, ActorStateChanged) and body.actor_id in self.actors:
            self.actors[body.actor_id].state = body.state
        elif isinstance(body, ActorFinished | ActorFailed) and body.actor_id in self.actors:
            record = self.actors[body.actor_id]
            if not record.state.terminal:
                record.state = (
                    ActorState.FAILED if isinstance(body, ActorFailed) else ActorState.FINISHED
                )
        self._track(body)

    # -- the log -----------------------------------------------------------------------------

    async def post(self, envelopes: list[Envelope]) -> None:
        """Agents report here; every envelope is logged in arrival order and streamed."""
        touched: set[str] = set()
        for env in envelopes:
            session = self.sessions.get(env.session)
            if session is None or session.finished:
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

    def _log_now(self, session: SessionRuntime, body: Message, sender: str = "supervisor") -> None:
        """Log one of the supervisor's own messages (no followers to wake: see ``_emit``)."""
        self._track(body)
        self._append_nowait(
            session, Envelope(session=session.session, sender=sender, recipient="*", body=body)
        )

    async def _emit(
        self, session: SessionRuntime, body: Message, sender: str = "supervisor"
    ) -> None:
        self._log_now(session, body, sender)
        await self._notify(session)

    def _track(self, body: Message) -> None:
        """Keep the actor tree's numbers current from the events flowing through."""
        actor_id = getattr(body, "actor_id", None)
        record = self.actors.get(actor_id) if actor_id else None
        if record is None:
            return
        if isinstance(body, Heartbeat):
            record.last_heartbeat = time.time()
            record.steps = body.steps
            record.rss_bytes, record.cpu_percent = body.rss_bytes, body.cpu_percent
        elif isinstance(body, ModelUsage):
            record.last_heartbeat = time.time()
            record.tokens += body.usage.total_tokens
            record.cost_usd += body.usage.cost_usd
        elif isinstance(body, ActorStateChanged):
            record.state = body.state

    # -- sessions ----------------------------------------------------------------------------

    def open_session(
        self,
        spec: AgentSpec,
        credentials: dict[str, str],
        *,
        interactive: bool = False,
        limits: dict[str, Any] | None = None,
    ) -> tuple[SessionRuntime, AgentSpec]:
        """Register a session and open its log (no agent yet); Max Mode opens its sessions
        here too, with its coordinator as the primary."""
        sid = spec.session
        if sid in self.sessions and not self.sessions[sid].finished:
            raise ValueError(f"session {sid} is already running")
        sdir = session_dir(spec.workspace, sid)
        ensure_state_ignored(spec.workspace)
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
            limits=SessionLimits(limits),
            transcript=list(spec.messages),
        )
        self.sessions[sid] = session
        self._index_session(sid, spec.workspace)
        return session, spec

    async def start_session(
        self,
        spec: AgentSpec,
        credentials: dict[str, str],
        config: dict[str, Any],
        interactive: bool = False,
        limits: dict[str, Any] | None = None,
        placement: dict[str, Any] | None = None,
    ) -> str:
        session, spec = self.open_session(spec, credentials, interactive=interactive, limits=limits)
        sid = session.session
        await self._emit(
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
        await self.gateway.register_credentials.remote(sid, credentials)
        host = None
        if placement:
            spec, host = await self._place_remotely(session, spec, placement)
        if spec.prompt or spec.messages:
            session.primary = spec.actor_id
            await self._spawn(session, spec, host=host)
        return sid

    async def _place_remotely(
        self, session: SessionRuntime, spec: AgentSpec, placement: dict[str, Any]
    ) -> tuple[AgentSpec, Any]:
        """Run the session's agent on a node with ``placement["resource"]``: ship the
        workspace there as a git bundle and give the agent its own local clone."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from stagecrew.orchestrator import remote_workspace as rw
        from stagecrew.orchestrator.hosts import gateway_for_node, start_agent_host

        resource = placement["resource"]
        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource, 0) > 0]
        if not nodes:
            raise ValueError(f"no live node has the resource '{resource}'")
        node_id = nodes[0]["NodeID"]
        pinned = NodeAffinitySchedulingStrategy(node_id, soft=False)
        loop = asyncio.get_running_loop()
        bundle, commit = await loop.run_in_executor(None, rw.bundle_workspace, session.workspace)
        materialise = ray.remote(num_cpus=0)(rw.materialise).options(scheduling_strategy=pinned)
        path = await materialise.remote(ray.put(bundle), commit)
        session.remote_node, session.remote_path, session.remote_base = node_id, path, commit
        await self._emit(
            session,
            Notice(
                text=f"workspace shipped to node {node_id[:12]} as a {len(bundle):,}-byte bundle",
            ),
        )
        remote_spec = spec.model_copy(
            update={
                "workspace": path,
                "session_dir": str(session_dir(path, session.session)),
            }
        )
        host = start_agent_host(scheduling_strategy=pinned)
        self.remote_gateways[node_id] = gateway_for_node(node_id, self.namespace)
        return remote_spec, host

    async def _bring_back_patch(self, session: SessionRuntime) -> None:
        """The remote agent's work, as a patch applied to the person's tree (after a snapshot)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from stagecrew.orchestrator import remote_workspace as rw
        from stagecrew.tools.worktrees import apply_patch_to

        assert session.remote_node and session.remote_path and session.remote_base
        pinned = NodeAffinitySchedulingStrategy(session.remote_node, soft=False)
        patch_task = ray.remote(num_cpus=0)(rw.patch_since).options(scheduling_strategy=pinned)
        patch = await patch_task.remote(session.remote_path, session.remote_base)
        remove_task = ray.remote(num_cpus=0)(rw.remove).options(scheduling_strategy=pinned)
        await remove_task.remote(session.remote_path)
        loop = asyncio.get_running_loop()
        try:
            applied = await loop.run_in_executor(
                None, partial(apply_patch_to, Path(session.workspace), patch, label="remote work")
            )
            text = (
                f"applied the patch from node {session.remote_node[:12]} "
                f"({len(patch.encode()):,} bytes; rewind snapshot {applied.snapshot_id})"
            )
            await self._emit(session, Notice(text=text))
        except Exception as exc:
            await self._emit(
                session,
                Notice(level="error", text=f"the remote patch did not apply: {exc}"),
            )

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
        await self._emit(session, UserInput(text=text), sender="person")
        await self._spawn(session, run_spec)
        return actor_id

    async def end_session(self, sid: str) -> None:
        session = self.sessions.get(sid)
        if session is None or session.finished:
            return
        running = session.primary and not self.actors[session.primary].state.terminal
        if running:
            await self.cancel(sid)
            await self.actors[session.primary].done.wait()
        # The run's own result when it was just cancelled (``last_result`` is set a moment
        # after ``done``), else the last finished turn's.
        latest = self.actors[session.primary].result if session.primary else None
        result = (latest if running else None) or session.last_result or latest
        result = result or AgentResult(actor_id=sid, stop_reason=StopReason.DONE)
        await self._finish_session(session, result)

    async def spawn_child(self, spec: AgentSpec, description: str = "") -> str:
        """A subagent (or candidate) started by an agent: same log, same tree, own actor."""
        session = self.sessions.get(spec.session)
        if session is None or session.finished:
            raise KeyError(f"no open session '{spec.session}'")
        parent = self.actors.get(spec.parent or "")
        if parent is not None and (parent.state.terminal or parent.stopping):
            raise RuntimeError(f"parent {spec.parent} is stopping; no new subagents")
        await self._spawn(session, spec, description)
        return spec.actor_id

    async def wait_actors(
        self, ids: list[str], timeout_s: float | None = None
    ) -> dict[str, dict[str, Any]]:
        """Results of the given actors; those still running after ``timeout_s`` say so."""
        records = [self.actors[i] for i in ids if i in self.actors]
        waits = [r.done.wait() for r in records if not r.done.is_set()]
        if waits and timeout_s != 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout=timeout_s)
        out: dict[str, dict[str, Any]] = {}
        for actor_id in ids:
            record = self.actors.get(actor_id)
            if record is None:
                out[actor_id] = {"stop_reason": "unknown", "error": "no such actor"}
            elif record.result is None:
                out[actor_id] = {"stop_reason": "running", "state": record.state.value}
            else:
                out[actor_id] = record.result.model_dump(mode="json", exclude={"messages"})
        return out

    async def _spawn(
        self, session: SessionRuntime, spec: AgentSpec, description: str = "", host: Any = None
    ) -> ActorRecord:
        placed = host is not None
        if host is None:
            host, from_pool = self._take_host()
        else:
            from_pool = False
        record = ActorRecord(
            actor_id=spec.actor_id,
            session=session.session,
            role=spec.role.value,
            parent=spec.parent,
            handle=host,
            spec=spec,
            description=description,
            model=spec.model.model,
        )
        self.actors[spec.actor_id] = record
        with contextlib.suppress(Exception):
            record.pid = await host.ping.remote()
        await self._emit(
            session,
            ActorStarted(
                actor_id=spec.actor_id,
                role=spec.role,
                parent=spec.parent,
                profile=spec.profile,
                model=spec.model.model,
                from_pool=from_pool,
                pid=record.pid,
                node_id=(session.remote_node if placed else None) or self.node_id,
            ),
        )
        me = ray.get_runtime_context().current_actor
        record.started_at = record.last_heartbeat = time.time()
        gateway = self.remote_gateways.get(session.remote_node or "", self.gateway)
        ref = host.run.remote(spec, me, gateway)
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
        killed = False
        try:
            result: AgentResult = await ref
            final = (
                ActorState.CANCELLED
                if result.stop_reason == StopReason.CANCELLED
                else ActorState.FINISHED
            )
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
            cause = type(exc).__name__
            if killed and record.stopping == "heartbeat":
                reason, message = StopReason.ERROR, "killed: no heartbeat (hung process)"
                final = ActorState.KILLED
            elif killed:
                reason = StopReason(record.stopping or StopReason.CANCELLED.value)
                message = f"killed: it did not stop within {CANCEL_GRACE_S:g} s of a cancel"
                final = ActorState.KILLED
            else:
                reason = StopReason.ERROR
                message = f"the actor process died: {_first_line(exc) or cause}"
                final = ActorState.FAILED
            await self._emit(
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
        if record.actor_id == session.primary and session.remote_path:
            await self._bring_back_patch(session)
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
        if session.finished:
            return
        usage = result.usage
        tokens = sum(a.tokens for a in self.actors.values() if a.session == session.session)
        cost = sum(a.cost_usd for a in self.actors.values() if a.session == session.session)
        if tokens > usage.total_tokens:  # subagents' usage counts toward the session
            usage = usage.model_copy(
                update={
                    "prompt_tokens": tokens - usage.completion_tokens,
                    "cost_usd": max(cost, usage.cost_usd),
                }
            )
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
        await self._stop_services(session.session)
        session.finished = True
        session.log.close()
        await self._notify(session)
        with contextlib.suppress(Exception):
            await self.gateway.forget_session.remote(session.session)

    # -- services: checkpoint writer, judge ---------------------------------------------------

    async def service(self, session_id: str, kind: str, model: ModelSpecWire) -> Any:
        """The session's service actor of this kind (created on first use, one per session).

        Services are actors like agents (own process, ``num_cpus=0``, in the tree and in
        ``crew ps``), but they serve requests instead of running a loop. Each is built with
        ``(session, workspace, session_dir, gateway, model)``.
        """
        import importlib

        key = (session_id, kind)
        if key in self.services:
            return self.services[key]
        session = self.sessions.get(session_id)
        if session is None or kind not in SERVICES:
            raise KeyError(f"no session '{session_id}' or no service '{kind}'")
        module, cls_name, role = SERVICES[kind]
        cls = getattr(importlib.import_module(module), cls_name)
        handle = (
            ray.remote(cls)
            .options(num_cpus=0, max_concurrency=16)
            .remote(
                session_id,
                session.workspace,
                str(session_dir(session.workspace, session_id)),
                self.gateway,
                model,
            )
        )
        self.services[key] = handle
        actor_id = f"{session_id}-{kind}"
        record = ActorRecord(
            actor_id=actor_id,
            session=session_id,
            role=role,
            parent=session.primary,
            handle=handle,
            model=model.model,
            state=ActorState.RUNNING,
        )
        self.actors[actor_id] = record
        await self._emit(
            session,
            ActorStarted(
                actor_id=actor_id, role=ActorRole(role), model=model.model, node_id=self.node_id
            ),
        )
        return handle

    async def complete(
        self, session_id: str, actor_id: str, model: ModelSpecWire, messages: list[dict[str, Any]]
    ) -> str:
        """One non-tool model call through the gateway, for the supervisor's own decisions
        (Max Mode ranking); usage is logged like any agent's."""
        from stagecrew.messages import ModelRequest, ModelRole, StreamDone, StreamError

        request = ModelRequest(
            session=session_id,
            actor_id=actor_id,
            role=ModelRole.JUDGE,
            spec=model,
            messages=messages,
        )
        async for ref in self.gateway.stream.remote(request):
            item = await ref
            if isinstance(item, StreamError) and not item.retryable:
                raise RuntimeError(item.message)
            if isinstance(item, StreamDone):
                session = self.sessions.get(session_id)
                if session is not None:
                    await self._emit(
                        session,
                        ModelUsage(
                            actor_id=actor_id,
                            model=item.model,
                            usage=item.usage,
                            latency_ms=item.latency_ms,
                        ),
                    )
                return item.text
        raise RuntimeError("the model stream ended without a final message")

    async def _stop_services(self, session_id: str) -> None:
        for (sid, kind), handle in list(self.services.items()):
            if sid != session_id:
                continue
            self.services.pop((sid, kind), None)
            record = self.actors.get(f"{sid}-{kind}")
            if record is not None:
                record.state = ActorState.FINISHED
                record.done.set()
            with contextlib.suppress(Exception):
                ray.kill(handle)

    # -- cancellation ------------------------------------------------------------------------

    def _descendants(self, actor_id: str) -> list[str]:
        out: list[str] = []
        frontier = [actor_id]
        while frontier:
            cur = frontier.pop()
            kids = [a.actor_id for a in self.actors.values() if a.parent == cur]
            out.extend(kids)
            frontier.extend(kids)
        return out

    def _depth(self, actor_id: str) -> int:
        depth, cur = 0, self.actors.get(actor_id)
        while cur is not None and cur.parent:
            depth += 1
            cur = self.actors.get(cur.parent)
        return depth

    async def cancel(
        self, target: str, kill: bool = False, reason: str = "cancelled", detail: str = ""
    ) -> list[str]:
        """Cancel a session (all its actors) or an actor and its subtree: children first,
        then parents; whatever has not stopped after a grace period is killed."""
        if target in self.sessions:
            ids = [a.actor_id for a in self.actors.values() if a.session == target]
        elif target in self.actors:
            ids = [target, *self._descendants(target)]
        else:
            raise KeyError(f"no session or actor '{target}'")
        ordered = sorted(ids, key=self._depth, reverse=True)
        cancelled = []
        for actor_id in ordered:
            record = self.actors[actor_id]
            if record.state.terminal or record.handle is None:
                continue
            cancelled.append(actor_id)
            if record.stopping is None:
                record.stopping = reason
            if kill:
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

    # -- the watchdog ------------------------------------------------------------------------

    async def _watch_limits(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_EVERY_S)
            with contextlib.suppress(Exception):
                await self._check_limits()

    async def _check_limits(self) -> None:
        self._shrink_idle_pool()
        now = time.time()
        for session in list(self.sessions.values()):
            if session.finished:
                continue
            live = [
                a
                for a in self.actors.values()
                if a.session == session.session and not a.state.terminal and a.handle is not None
            ]
            lim = session.limits
            for record in live:
                if record.stopping or record.spec is None:  # services do not heartbeat
                    continue
                spec = record.spec
                if now - record.last_heartbeat > lim.heartbeat_timeout_s:
                    record.stopping = "heartbeat"
                    await self._kill(record)
                elif spec is not None and now - record.started_at > spec.wall_time_s:
                    await self.cancel(
                        record.actor_id,
                        reason=StopReason.TIMEOUT.value,
                        detail=f"ran longer than its wall-time limit of {spec.wall_time_s:g} s",
                    )
            if session.stopping or not live:
                continue
            used_tokens = sum(
                a.tokens for a in self.actors.values() if a.session == session.session
            )
            used_cost = sum(
                a.cost_usd for a in self.actors.values() if a.session == session.session
            )
            why: tuple[str, str] | None = None
            if lim.max_tokens is not None and used_tokens >= lim.max_tokens:
                why = ("budget", f"the session used {used_tokens} tokens (limit {lim.max_tokens})")
            elif lim.max_cost_usd is not None and used_cost >= lim.max_cost_usd:
                why = (
                    "budget",
                    f"the session spent ${used_cost:.4f} (limit ${lim.max_cost_usd:g})",
                )
            elif lim.wall_time_s is not None and now - session.started_at > lim.wall_time_s:
                why = ("timeout", f"the session ran longer than {lim.wall_time_s:g} s")
            if why:
                session.stopping = why[0]
                await self.cancel(session.session, reason=why[0], detail=why[1])

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
                limits=req.get("limits"),
                placement=req.get("placement"),
            )
            return {"ok": True, "session": sid}
        if op == "start_max_session":
            sid = await self.start_max_session(
                AgentSpec.model_validate(req["spec"]),
                req.get("credentials", {}),
                req.get("config", {}),
                req.get("limits"),
                req["max"],
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
