"""Create (or find) the supervisor on a Ray head and print its control endpoint as JSON.

Run as a child process by ``runtime``, so the CLI itself never imports ray: this process pays
the import and the attach, creates the detached actors, and exits; they stay on the head.
"""

from __future__ import annotations

import argparse
import json
import logging
import os


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
    from stagecrew.orchestrator.hosts import get_or_create_supervisor

    supervisor = get_or_create_supervisor(
        args.state_home, args.namespace, args.address, args.pool_size
    )
    endpoint = ray.get(supervisor.start_control.remote(), timeout=120)
    print(json.dumps(endpoint), flush=True)


if __name__ == "__main__":
    main()
