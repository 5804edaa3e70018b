"""Create (or find) the supervisor on a Ray head and print its control endpoint as JSON.

Run as a child process by ``runtime``, so the CLI itself never imports ray: this process pays
the import and the attach, creates the detached actors, and exits; they stay on the head.

The supervisor is created with its control token and port, and with ``max_restarts=-1``: when
its process dies Ray starts a new one with the same arguments, which serves the same endpoint
(the head record stays true) after it has ended what its predecessor left running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import socket
from typing import Any


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def get_or_create_supervisor(
    state_home: str, namespace: str, cluster_address: str, pool_size: int
) -> Any:
    import ray

    from stagecrew.orchestrator.names import SUPERVISOR_NAME
    from stagecrew.orchestrator.supervisor import Supervisor

    host = ray.util.get_node_ip_address()
    return (
        ray.remote(Supervisor)
        .options(
            name=SUPERVISOR_NAME,
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=1000,
            max_restarts=-1,
        )
        .remote(
            state_home,
            namespace,
            pool_size,
            cluster_address,
            secrets.token_urlsafe(24),
            _free_port(host),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--state-home", required=True)
    parser.add_argument("--namespace", default="stagecrew")
    parser.add_argument("--pool-size", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    host = args.address.rsplit(":", 1)[0]
    local = host in ("127.0.0.1", "localhost")
    ray.init(
        address=args.address,
        # Without it the driver probes 8.8.8.8 to guess its own address.
        _node_ip_address="127.0.0.1" if local else None,
        namespace=args.namespace,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=False,
    )
    supervisor = get_or_create_supervisor(
        args.state_home, args.namespace, args.address, args.pool_size
    )
    endpoint = ray.get(supervisor.start_control.remote(), timeout=120)
    print(json.dumps(endpoint), flush=True)


if __name__ == "__main__":
    main()
