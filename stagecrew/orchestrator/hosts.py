"""The Ray wrappers: the only place the plain actor classes become remote actors.

Every actor takes ``num_cpus=0``: on a 2-core machine actors that reserve a CPU block the third
one forever, and these actors mostly wait on models and tools.
"""

from __future__ import annotations

from typing import Any

import ray

from stagecrew.actors.gateway import ModelGateway
from stagecrew.orchestrator.agent_host import AgentHost
from stagecrew.orchestrator.supervisor import Supervisor

SUPERVISOR_NAME = "stagecrew-supervisor"

SupervisorActor = ray.remote(Supervisor)
GatewayActor = ray.remote(ModelGateway)
AgentHostActor = ray.remote(AgentHost)


def get_or_create_supervisor(
    state_home: str, namespace: str = "stagecrew", cluster_address: str = "", pool_size: int = 2
) -> Any:
    return SupervisorActor.options(
        name=SUPERVISOR_NAME,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=1000,
    ).remote(state_home, namespace, pool_size, cluster_address)


def gateway_name(node_id: str) -> str:
    return f"stagecrew-gateway-{node_id[:16]}"


def get_or_create_gateway(node_id: str, namespace: str = "stagecrew") -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return GatewayActor.options(
        name=gateway_name(node_id),
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=1000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote()


def gateway_for_node(node_id: str, namespace: str = "stagecrew") -> Any:
    """The model gateway on that node (agents talk to the one beside them)."""
    return get_or_create_gateway(node_id, namespace)


def start_agent_host(scheduling_strategy: Any = None) -> Any:
    options: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 64}
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    return AgentHostActor.options(**options).remote()
