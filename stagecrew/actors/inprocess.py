"""Run the agent loop in this process: the real ``Agent`` and ``ModelGateway``, no Ray.

Why this exists: the orchestrator runs ``Agent`` inside an ``AgentHost`` actor, talking to the
gateway actor through a Ray streaming generator and to the supervisor through a batching
outbox. Tests of the loop's behaviour (weak models, plan mode) and a future ``--no-ray`` debug
mode need the same loop without starting a Ray head (about 6 s) and without separate processes
a debugger cannot follow. The ports are what make that possible: this module supplies the
three in-process ones and nothing else. It is **not** a second implementation: the loop, the
repairer, the permission checks and the tools are exactly the objects the actor runs, and the
model is reached through the gateway's own ``stream`` (litellm, retries, error lines), so what
passes here passes there. Only Ray transport, the heartbeat and the event log are left out.

Importing this module does not import litellm; the first model call does (the gateway is built
with ``preload=False`` so a short run does not pay litellm's warm-up twice).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from stagecrew.actors.agent import Agent
from stagecrew.actors.gateway import ModelGateway
from stagecrew.actors.spec import AgentResult, AgentSpec, PermissionPort
from stagecrew.messages import Message, ModelRequest, StreamItem
from stagecrew.tools.base import Tool
from stagecrew.tools.providers import ToolProvider

__all__ = ["CollectingSink", "InProcessModelPort", "run_agent_inprocess"]


class InProcessModelPort:
    """The agent's ``ModelPort`` over a gateway in the same process.

    The actor host needs an adapter (``RayModelPort``) to turn Ray object refs back into
    stream items; in-process the gateway's async generator already is the stream, so this only
    forwards. Kept as a class anyway so the gateway can be shared by several agents (parallel
    candidates in a test) while each agent holds its own port, exactly as in the actor tree.
    """

    def __init__(self, gateway: ModelGateway) -> None:
        self.gateway = gateway

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        # aclosing: when the agent stops reading (cancelled mid-stream), the gateway's
        # generator is closed at once, releasing its provider slot and HTTP connection,
        # instead of whenever the event loop finalises it.
        async with contextlib.aclosing(self.gateway.stream(request)) as items:
            async for item in items:
                yield item


class CollectingSink:
    """An ``EventSink`` that keeps every emitted message, in order.

    Stands in for the supervisor's event log: tests assert on what a person would have seen
    (a ``Notice`` about a repair or a model switch, each ``ToolFinished``), and a debug run can
    print or dump them afterwards. ``emit`` never blocks or fails, like the real outbox.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def emit(self, body: Message) -> None:
        self.messages.append(body)

    def of_type(self, kind: type) -> list[Message]:
        """The collected messages of one class, e.g. ``sink.of_type(Notice)``."""
        return [m for m in self.messages if isinstance(m, kind)]


async def run_agent_inprocess(
    spec: AgentSpec,
    *,
    tools: dict[str, Tool] | None = None,
    providers: list[ToolProvider] | None = None,
    ask_permission: PermissionPort | None = None,
    gateway: ModelGateway | None = None,
) -> tuple[AgentResult, list[Message]]:
    """Run one agent to its stop reason in this process; return its result and its events.

    ``tools``, ``providers`` and ``ask_permission`` go to ``Agent`` unchanged (``None``: every
    built-in tool, no other provider;
    ``ask`` rules resolved by ``spec.ask_policy``). ``gateway`` lets a caller share one gateway
    between runs or register credentials on it first; by default a fresh one is built with
    ``preload=False`` (its warm-up is a throw-away call whose only point is a fast first
    request in a long-lived actor). The events come back even when the run fails, because the
    agent turns every failure into a result rather than raising.
    """
    gw = gateway if gateway is not None else ModelGateway(preload=False)
    sink = CollectingSink()
    agent = Agent(
        spec,
        InProcessModelPort(gw),
        sink,
        tools=tools,
        providers=providers,
        ask_permission=ask_permission,
    )
    result = await agent.run()
    return result, sink.messages
