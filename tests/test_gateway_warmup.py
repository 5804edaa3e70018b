"""The gateway's warm-up call goes through litellm's whole streaming path, tool call included,
against its own one-purpose server on 127.0.0.1 (no test code in production)."""

from __future__ import annotations

import asyncio

from stagecrew.actors.gateway import ModelGateway


def test_warm_up_streams_a_tool_call_once_per_process() -> None:
    gateway = ModelGateway(preload=False)
    took = asyncio.run(gateway.warm_up())
    assert 0 < took < 60
    assert asyncio.run(gateway.warm_up()) == took  # once per process
