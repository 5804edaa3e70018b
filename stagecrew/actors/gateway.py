"""The model gateway: the one process per node that imports litellm.

Agents send it ``ModelRequest``s and get ``StreamItem``s back as a stream. It holds the
session's credentials (handed over by the supervisor, never logged), limits concurrent calls
per provider, and accumulates usage and cost per session. A plain async class: the
orchestrator wraps it with ``ray.remote``; tests can run it in-process.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import AsyncIterator

from stagecrew.envutil import restore_process_env
from stagecrew.llm.providers import apply_endpoint, provider_of, required_key_env
from stagecrew.messages import ModelRequest, StreamDone, StreamError, StreamItem, Usage


class ModelGateway:
    def __init__(self, per_provider_concurrency: int = 16, preload: bool = True) -> None:
        restore_process_env()
        self._credentials: dict[str, dict[str, str]] = {}
        self._usage: dict[str, Usage] = defaultdict(Usage)
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._per_provider = per_provider_concurrency
        self.calls = 0
        self._warmed: float | None = None
        if preload:  # pay litellm's import once, at start, not on the first request
            from stagecrew.llm.client import warm_up

            warm_up()

    async def warm_up(self) -> float:
        """One real streamed call with tools, to a throw-away server on 127.0.0.1, in this
        actor's own event loop: litellm and the OpenAI SDK set up their async clients, SSL
        contexts and stream parsers lazily (about 0.3 s), which the first session must not pay.
        Returns the seconds it took."""
        if self._warmed is not None:  # once per process, however many ask
            return self._warmed
        import time

        from stagecrew.llm.client import stream_completion
        from stagecrew.llm.warmup_server import WarmUpServer
        from stagecrew.messages import ModelRole, ModelSpecWire

        started = time.perf_counter()
        with WarmUpServer() as server:
            request = ModelRequest(
                session="warm-up",
                actor_id="gateway",
                role=ModelRole.PRIMARY,
                spec=ModelSpecWire(model="openai/warm-up", api_base=server.base_url, num_retries=0),
                messages=[{"role": "user", "content": "warm up"}],
                tools=[
                    {
                        "type": "function",
                        "function": {"name": "noop", "parameters": {"type": "object"}},
                    }
                ],
            )
            last: StreamItem | None = None
            async for item in stream_completion(request, "unused"):
                last = item
        if not isinstance(last, StreamDone) or not last.tool_calls:
            raise RuntimeError(f"the gateway's warm-up call did not complete: {last!r}")
        self._warmed = time.perf_counter() - started
        return self._warmed

    def ping(self) -> dict[str, int]:
        return {"pid": os.getpid(), "calls": self.calls}

    def register_credentials(self, session: str, credentials: dict[str, str]) -> None:
        self._credentials[session] = dict(credentials)

    async def fetch_credentials(self, session: str) -> dict[str, str]:
        """Keys for a session this process was never handed (it restarted since): none here;
        the supervised wrapper asks the supervisor."""
        return {}

    async def _session_credentials(self, session: str) -> dict[str, str]:
        if session not in self._credentials:
            found = await self.fetch_credentials(session)
            if found:
                self._credentials[session] = found
            return found
        return self._credentials[session]

    def forget_session(self, session: str) -> None:
        self._credentials.pop(session, None)

    def session_usage(self, session: str) -> Usage:
        return self._usage.get(session, Usage())

    def _limit(self, provider: str) -> asyncio.Semaphore:
        if provider not in self._limits:
            self._limits[provider] = asyncio.Semaphore(self._per_provider)
        return self._limits[provider]

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        from stagecrew.llm.client import stream_completion

        self.calls += 1
        key_env = required_key_env(request.spec)
        api_key = None
        # The session's keys and endpoint variables, from the command that started it.
        session_keys = self._credentials.get(request.session, {})
        if key_env:
            session_keys = await self._session_credentials(request.session)
            api_key = session_keys.get(key_env) or os.environ.get(key_env)
            if not api_key:
                yield StreamError(
                    error_kind="missing_key",
                    message=f"model role '{request.role.value}' ({request.spec.model}): no API key "
                    f"— set {key_env} in the environment where you run crew",
                )
                return
        spec = apply_endpoint(request.spec, session_keys)
        if spec is not request.spec:
            request = request.model_copy(update={"spec": spec})
        async with self._limit(provider_of(request.spec.model)):
            async for item in stream_completion(request, api_key, key_env):
                if isinstance(item, StreamDone):
                    self._usage[request.session] = self._usage[request.session] + item.usage
                yield item
