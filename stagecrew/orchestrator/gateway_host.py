"""The model gateway as a supervised Ray actor.

``actors/gateway.py`` is the plain gateway; this adds what only a Ray process can do. The
gateway is stateless apart from the keys it was handed, so its policy is restart-and-retry:
Ray restarts a dead replica (``max_restarts=-1``), the restarted one warms itself up, and a
request for a session it has no keys for asks the supervisor, which keeps them in memory for
exactly this (never on disk, never in the log).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import ray

from stagecrew.actors.gateway import ModelGateway
from stagecrew.llm.providers import endpoint_variables
from stagecrew.orchestrator.names import SUPERVISOR_NAME


class GatewayHost(ModelGateway):
    def __init__(self) -> None:
        # This process inherited the environment of whoever started the head. Its provider
        # endpoint variables would be litellm's fallback for every session; each session
        # brings its own instead (``llm.providers.apply_endpoint``).
        for name in endpoint_variables():
            os.environ.pop(name, None)
        super().__init__()
        # The async warm-up runs in the actor's own loop as its first call, also after a
        # restart (nobody else knows the process is new).
        with contextlib.suppress(Exception):
            ray.get_runtime_context().current_actor.warm_up.remote()

    async def fetch_credentials(self, session: str) -> dict[str, str]:
        try:
            namespace = ray.get_runtime_context().namespace
            supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=namespace)
            found: Any = await supervisor.credentials.remote(session)
        except Exception:
            return {}
        return dict(found or {})
