"""The process an agent runs in: wires a plain ``Agent`` to Ray (gateway stream, supervisor
log, permission answers) and gives the supervisor a handle to cancel it.

Hosts are started ahead of need (the warm pool), so their imports are done before a session
asks for one: taking a host from the pool costs a Ray call, not a process start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from stagecrew.actors.agent import Agent
from stagecrew.actors.spec import AgentResult, AgentSpec
from stagecrew.envutil import restore_process_env
from stagecrew.messages import (
    ActorRole,
    Envelope,
    Heartbeat,
    Message,
    ModelRole,
    Notice,
    PermissionRequest,
    StopReason,
)
from stagecrew.oneline import one_line
from stagecrew.orchestrator.model_port import RayModelPort
from stagecrew.orchestrator.procs import ACTOR_ID_VAR
from stagecrew.tools.providers import ProviderEnv, build_providers
from stagecrew.tools.registry import default_tools


class Outbox:
    """Envelopes to the supervisor, sent in order, in batches, without blocking the loop."""

    def __init__(self, supervisor: Any, session: str, sender: str) -> None:
        self.supervisor = supervisor
        self.session = session
        self.sender = sender
        self._queue: list[Envelope] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._drain())

    def emit(self, body: Message) -> None:
        self._queue.append(Envelope(session=self.session, sender=self.sender, body=body))
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self.supervisor.post.remote(batch)
                except Exception:  # the supervisor is gone: nothing to report to
                    self._queue.clear()
            if self._closed and not self._queue:
                return

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, timeout=10)


def _warm_up() -> None:
    """Do every lazy first-time cost now, while the host waits in the pool, not when a session
    is waiting on it: tool schemas, the shell grammar behind permission checks, the repairer,
    the modules a run imports on its way to the first model request (child specs, hooks)."""
    from pathlib import Path

    import stagecrew.actors.builder
    import stagecrew.hooks  # noqa: F401
    from stagecrew.llm.repair import repair_arguments
    from stagecrew.tools.permissions import DEFAULT_RULES, PermissionChecker
    from stagecrew.tools.providers import BuiltinTools

    BuiltinTools(default_tools()).specs()
    PermissionChecker(DEFAULT_RULES).check("bash", {"command": "git status && ls"}, Path("/"))
    repair_arguments('{"a": 1,}')


class RaySubagentPort:
    """The ``task`` tool's way to the supervisor: children are actors like any other."""

    def __init__(self, supervisor: Any, parent: AgentSpec) -> None:
        self.supervisor = supervisor
        self.parent = parent

    async def spawn(self, prompt: str, profile: str, description: str) -> str:
        from stagecrew.actors.builder import child_spec

        spec = child_spec(self.parent, prompt, profile)
        return await self.supervisor.spawn_child.remote(spec, description)

    async def wait(self, ids: list[str], timeout_s: float | None) -> dict[str, dict[str, Any]]:
        return await self.supervisor.wait_actors.remote(ids, timeout_s)

    async def cancel(self, ids: list[str]) -> None:
        for actor_id in ids:
            with contextlib.suppress(Exception):
                await self.supervisor.cancel.remote(actor_id)


async def _expand_mcp_prompt(spec: AgentSpec, supervisor: Any, outbox: Outbox) -> AgentSpec:
    """``/mcp__<server>__<prompt> args`` as the person's message: the server's prompt text,
    from the session's MCP service (Claude Code's MCP slash commands)."""
    line = spec.prompt.strip()
    mcp = next((p for p in spec.providers if p.kind == "mcp"), None)
    if not line.startswith("/mcp__") or mcp is None:
        return spec
    try:
        handle = await supervisor.tool_service.remote(spec.session, "mcp", mcp.options)
        text = await handle.expand_prompt.remote(line)
    except Exception as exc:  # a missing argument, a failed server: say so, keep the words
        first = one_line(exc, last=True)
        outbox.emit(
            Notice(actor_id=spec.actor_id, level="error", text=f"{line.split()[0]}: {first}")
        )
        return spec
    if text is None:
        return spec
    messages = [
        {**m, "content": text} if m.get("role") == "user" and m.get("content") == spec.prompt else m
        for m in spec.messages
    ]
    outbox.emit(
        Notice(actor_id=spec.actor_id, text=f"{line.split()[0]}: the MCP prompt was expanded")
    )
    return spec.model_copy(update={"prompt": text, "messages": messages})


class RayServicePorts:
    """A session's tool services (``ProviderEnv.service``) as port objects over their
    actors: ``specs()`` and ``call()`` become Ray calls to the session's service actor."""

    def __init__(self, supervisor: Any, session: str) -> None:
        self.supervisor = supervisor
        self.session = session

    async def get(self, kind: str, options: dict[str, Any]) -> Any:
        handle = await self.supervisor.tool_service.remote(self.session, kind, options)
        return _ActorToolPort(self, kind, options, handle)


class _ActorToolPort:
    """One tool service's actor; when it has died, the supervisor is asked for its
    replacement (it restarts a tool service once per session) and the call is made again."""

    def __init__(self, ports: RayServicePorts, kind: str, options: dict[str, Any], handle: Any):
        self.ports = ports
        self.kind = kind
        self.options = options
        self.handle = handle

    async def _ask(self, method: str, *args: Any) -> Any:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return await getattr(self.handle, method).remote(*args)
        except RayActorError:
            dead = self.handle
            ports = self.ports
            try:
                self.handle = await ports.supervisor.tool_service.remote(
                    ports.session, self.kind, self.options, dead
                )
            except RayTaskError as exc:  # no more restarts: the supervisor's one line
                raise ToolServiceGone(str(exc.cause) if exc.cause else one_line(exc)) from None
            return await getattr(self.handle, method).remote(*args)

    async def specs(self) -> list[dict[str, Any]]:
        return list(await self._ask("specs"))

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(await self._ask("call", name, arguments))
        except ToolServiceGone as exc:
            return {"content": f"{name} is unavailable: {exc}", "is_error": True}

    async def notices(self) -> list[str]:
        return list(await self._ask("notices"))


class ToolServiceGone(RuntimeError):
    """The session's tool service died and will not be restarted again."""


class RayCheckpointPort:
    """The session's checkpoint-writer service as the agent's ``CheckpointPort``.

    The service actor is asked for on first use, not at start: most runs never fill 40 % of
    their window nor save to project memory, and a process start on the way to the first
    model request would cost more than the whole request.
    """

    def __init__(self, supervisor: Any, spec: AgentSpec) -> None:
        self.supervisor = supervisor
        self.session = spec.session
        self.model = spec.role_models.get(ModelRole.CHECKPOINT.value, spec.model)
        self._handle: Any = None
        self._lock = asyncio.Lock()

    async def _service(self) -> Any:
        async with self._lock:
            if self._handle is None:
                self._handle = await self.supervisor.service.remote(
                    self.session, "checkpoint", self.model
                )
            return self._handle

    async def request(self, reason: str, new_messages: list[dict[str, Any]], goal: str) -> None:
        handle = await self._service()
        await handle.request.remote(reason, new_messages, goal)

    async def save_memory(self, section: str, text: str) -> str:
        handle = await self._service()
        reply = await handle.save_memory.remote(section, text)
        if not reply.get("ok"):
            raise ValueError(reply.get("error") or "project memory refused the entry")
        return str(reply["message"])

    async def wait_idle(self, timeout_s: float) -> bool:
        if self._handle is None:
            return True
        return bool(await self._handle.wait_idle.remote(timeout_s))


class AgentHost:
    def __init__(self) -> None:
        restore_process_env()
        _warm_up()
        self._task: asyncio.Task[AgentResult] | None = None
        self.agent: Agent | None = None

    def ping(self) -> int:
        return os.getpid()

    async def run(
        self, spec: AgentSpec, supervisor: Any, gateways: list[Any], heartbeat_s: float = 2.0
    ) -> AgentResult:
        # Every process a tool starts inherits this, so the supervisor can find and kill what
        # is left even if this process is SIGKILLed.
        os.environ[ACTOR_ID_VAR] = spec.actor_id
        outbox = Outbox(supervisor, spec.session, spec.actor_id)

        async def ask(request: PermissionRequest) -> str:
            return await supervisor.await_permission.remote(spec.session, request.request_id)

        goal_gate = None
        if spec.goal_spec is not None:
            from stagecrew.actors.goal import GoalGate
            from stagecrew.orchestrator.judge_host import RayJudgePort

            judge_model = spec.role_models.get("judge", spec.model)
            judge = await supervisor.service.remote(spec.session, "judge", judge_model)
            port = RayJudgePort(judge, workspace=spec.workspace)
            goal_gate = GoalGate(spec.goal_spec, port, outbox, actor_id=spec.actor_id)
        providers, problems = await build_providers(
            spec.providers,
            ProviderEnv(
                session=spec.session,
                actor_id=spec.actor_id,
                workspace=spec.workspace,
                service=RayServicePorts(supervisor, spec.session).get,
            ),
        )
        if spec.role == ActorRole.PRIMARY:  # once per session, not once per subagent
            for problem in problems:
                outbox.emit(Notice(actor_id=spec.actor_id, level="warning", text=problem))
        spec = await _expand_mcp_prompt(spec, supervisor, outbox)
        self.agent = Agent(
            spec,
            RayModelPort(gateways),
            outbox,
            providers=providers,
            ask_permission=ask,
            checkpoint=RayCheckpointPort(supervisor, spec),
            goal_gate=goal_gate,
        )
        self.agent.ctx.services.subagents = RaySubagentPort(supervisor, spec)
        self._task = asyncio.create_task(self.agent.run())
        beat = asyncio.create_task(self._heartbeat(outbox, spec.actor_id, heartbeat_s))
        try:
            result = await asyncio.shield(self._task)
        except asyncio.CancelledError:  # the Ray call itself was cancelled
            self._task.cancel()
            result = await self._task
        except Exception as exc:  # a bug in the loop: one line, never a multi-line dump
            first = one_line(exc)
            result = AgentResult(
                actor_id=spec.actor_id,
                stop_reason=StopReason.ERROR,
                error=f"{type(exc).__name__}: {first}",
            )
        finally:
            beat.cancel()
        await outbox.close()
        return result

    async def _heartbeat(self, outbox: Outbox, actor_id: str, every_s: float) -> None:
        import psutil

        proc = psutil.Process()
        proc.cpu_percent()
        while True:
            await asyncio.sleep(every_s)
            agent = self.agent
            if agent is None:
                continue
            outbox.emit(
                Heartbeat(
                    actor_id=actor_id,
                    steps=agent.steps,
                    tokens=agent.usage.total_tokens,
                    cost_usd=agent.usage.cost_usd,
                    rss_bytes=proc.memory_info().rss,
                    cpu_percent=proc.cpu_percent(),
                )
            )

    async def cancel(self, reason: str = "cancelled", detail: str = "") -> bool:
        """Cancel the running loop; the agent kills its tools' process trees and returns a
        result with ``reason`` (the watchdog's timeout/budget/stuck, or a plain cancel)."""
        if self._task is None or self._task.done() or self.agent is None:
            return False
        self.agent.cancel_reason = StopReason(reason)
        self.agent.cancel_detail = detail
        self._task.cancel()
        return True
