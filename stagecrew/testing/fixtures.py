"""Pytest fixtures for the scripted model server.

Import into a conftest (``from stagecrew.testing.fixtures import scripted_llm``) so every test
can start as many servers as it needs and none outlives its test: a leaked server keeps a
thread and a port, and a hanging turn would keep a client waiting for up to two minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stagecrew.testing.scripted_llm import ScriptedLLM, ScriptLike

__all__ = ["MakeScriptedLLM", "scripted_llm"]

MakeScriptedLLM = Callable[..., ScriptedLLM]


@pytest.fixture
def scripted_llm() -> Iterator[MakeScriptedLLM]:
    """A factory ``make(script=None, **kw) -> ScriptedLLM``; every server is closed at teardown.

    ``kw`` goes to :class:`ScriptedLLM` (``port``, ``record_to``, ``hang_cap``).
    """
    servers: list[ScriptedLLM] = []

    def make(script: ScriptLike | None = None, **kw: Any) -> ScriptedLLM:
        server = ScriptedLLM(script, **kw)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
