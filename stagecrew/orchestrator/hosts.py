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


# A standby starts this long after the gateway before it is warm: its litellm import (about
# 5 s of CPU) must not compete with the first sessions and pool refills of a cold start.
STANDBY_DELAY_S = 20.0


async def add_standby_gateways(node_id: str, namespace: str, into: list[Any]) -> None:
    """Append the node's standby gateway replicas to ``into`` (which holds the first), each
    ``STANDBY_DELAY_S`` after the one before it is warm. Agents try them in this order."""
    import asyncio

    while len(into) < GATEWAY_REPLICAS:
        try:
            await into[-1].warm_up.remote()
        except Exception:
            await asyncio.sleep(5.0)
        await asyncio.sleep(STANDBY_DELAY_S)
        into.append(get_or_create_gateway(node_id, namespace, len(into)))


def start_agent_host(scheduling_strategy: Any = None) -> Any:
    options: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 64}
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    return AgentHostActor.options(**options).remote()
