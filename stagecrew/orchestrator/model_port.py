"""The model gateways as the ``ModelPort`` an agent (or a service) streams from, with
failover: the gateway is stateless, so a request whose gateway died is sent again to the
node's other replica, at once, while Ray restarts the dead one.

Partial output of the dead stream is void: the port says so with a ``StreamRetry`` (the
agent drops the pending text and logs the retry, which the CLI shows as one line) before the
retry streams the whole answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray.exceptions import RayActorError

from stagecrew.messages import ModelRequest, StreamDone, StreamError, StreamItem, StreamRetry
from stagecrew.oneline import one_line

# Each failover goes to the next replica; a gateway restarted by Ray takes about 5 s to
# import litellm, so the waits between rounds give it that long in all.
FAILOVER_WAITS_S = (0.0, 0.5, 1.5, 3.0, 5.0)


class RayModelPort:
    def __init__(self, gateways: list[Any] | Any) -> None:
        self.gateways = list(gateways) if isinstance(gateways, list | tuple) else [gateways]

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        order = list(self.gateways)
        for attempt, wait_s in enumerate(FAILOVER_WAITS_S, start=1):
            await asyncio.sleep(wait_s)
            gen = order[0].stream.remote(request)
            finished = False
            try:
                async for ref in gen:
                    yield await ref
                finished = True
                return
            except RayActorError as exc:
                cause = f"{type(exc).__name__}: {one_line(exc, limit=200)}"
                order = order[1:] + order[:1]
                if attempt == len(FAILOVER_WAITS_S):
                    yield StreamError(
                        error_kind="gateway",
                        message=f"the model gateway failed {attempt} times in a row ({cause}) "
                        "— see `crew ps`; `crew down` restarts everything",
                    )
                    return
                yield StreamRetry(
                    attempt=attempt + 1,
                    max_attempts=len(FAILOVER_WAITS_S),
                    delay_s=FAILOVER_WAITS_S[attempt],
                    error_kind="gateway",
                    message=f"the model gateway stopped ({type(exc).__name__}); "
                    "sending the request again" + (" to its standby" if len(order) > 1 else ""),
                    discard_partial=True,
                )
            finally:
                if not finished:
                    with contextlib.suppress(Exception):
                        ray.cancel(gen)


async def complete_text(port: RayModelPort, request: ModelRequest) -> StreamDone:
    """One whole (non-streamed to anyone) answer: the final ``StreamDone``; a final error
    raises ``RuntimeError`` with its one line."""
    async for item in port.stream(request):
        if isinstance(item, StreamError):
            raise RuntimeError(item.message)
        if isinstance(item, StreamDone):
            return item
    raise RuntimeError("the model stream ended without a final message")
