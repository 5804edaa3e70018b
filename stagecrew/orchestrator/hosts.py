"""The Ray wrappers: where the plain actor classes become remote actors with their options.

Every actor takes ``num_cpus=0``: on a 2-core machine actors that reserve a CPU block the third
one forever, and these actors mostly wait on models and tools. Restart policies are chosen by
what each holds (see ARCHITECTURE.md, "Supervision"): gateways restart forever (stateless),
agent hosts never (their session is resumed from its log instead).
"""

from __future__ import annotations

from typing import Any

import ray

from stagecrew.orchestrator.agent_host import AgentHost
from stagecrew.orchestrator.gateway_host import GatewayHost
from stagecrew.orchestrator.names import GATEWAY_REPLICAS, SUPERVISOR_NAME, gateway_name

__all__ = [
    "SUPERVISOR_NAME",
    "add_standby_gateways",
    "gateway_name",
    "get_or_create_gateway",
    "start_agent_host",
]

GatewayActor = ray.remote(GatewayHost)
AgentHostActor = ray.remote(AgentHost)


def get_or_create_gateway(node_id: str, namespace: str = "stagecrew", replica: int = 0) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return GatewayActor.options(
        name=gateway_name(node_id, replica),
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=1000,
        max_restarts=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote()


async def add_standby_gateways(node_id: str, namespace: str, into: list[Any]) -> None:
    """Append the node's standby gateway replicas to ``into`` (which holds the first), each
    once the one before it is warm, so their litellm imports (about 5 s of CPU each) never
    compete with a cold start's first request. Agents try the replicas in this order."""
    import asyncio

    while len(into) < GATEWAY_REPLICAS:
        try:
            await into[-1].warm_up.remote()
        except Exception:
            await asyncio.sleep(5.0)
        into.append(get_or_create_gateway(node_id, namespace, len(into)))


def start_agent_host(scheduling_strategy: Any = None) -> Any:
    options: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 64}
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    return AgentHostActor.options(**options).remote()
