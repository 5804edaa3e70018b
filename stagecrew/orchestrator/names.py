"""Names of the detached actors, in one place: the supervisor and each node's gateways.

Every process that must find one of them by name (the bootstrap, services posting usage,
tests attaching to the head) imports this module, which imports nothing, so finding an actor
never pulls in the modules that define it.
"""

from __future__ import annotations

SUPERVISOR_NAME = "stagecrew-supervisor"
# Every process of a local head carries this (the head's temp dir): how ``crew down`` and
# recovery tell this head's processes from any other Ray on the machine.
HEAD_ID_VAR = "STAGECREW_HEAD_ID"
# Two warm replicas per node: an agent whose gateway dies goes on with the other at once
# (importing litellm into a restarted one takes about 5 s; a failover takes milliseconds).
GATEWAY_REPLICAS = 2


def gateway_name(node_id: str, replica: int = 0) -> str:
    base = f"stagecrew-gateway-{node_id[:16]}"
    return base if replica == 0 else f"{base}-{replica}"
