"""What a tool may reach beyond the workspace: typed, one field per service.

The agent (or its Ray host) fills an ``AgentServices`` when it starts; tools read the field
they need and say clearly what is missing when it is not there (a memory writer in an agent
without a session, subagents in-process without a port). Replaces string keys in a shared
dict: a typo is now an attribute error at import, not a silent ``None`` at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from stagecrew.memory.index import MemoryIndex
    from stagecrew.memory.layers import MemoryPaths


class SubagentPort(Protocol):
    """The ``task`` tool's way to start, await and cancel child agents."""

    async def spawn(self, prompt: str, profile: str, description: str) -> str: ...

    async def wait(self, ids: list[str], timeout_s: float | None) -> dict[str, dict[str, Any]]: ...

    async def cancel(self, ids: list[str]) -> None: ...


# (section or None, text) -> the confirmation line; the one writer of project memory.
MemoryWriter = Callable[[str | None, str], Awaitable[str]]


@dataclass
class AgentServices:
    memory_paths: MemoryPaths | None = None
    # Opened on first use (``memory_tools.memory_index``) and closed when the agent ends.
    memory_index: MemoryIndex | None = None
    memory_writer: MemoryWriter | None = None
    user_config_dir: str | None = None
    subagents: SubagentPort | None = None
    # Branches the git tool refuses to commit on (None: its defaults), and the override.
    protected_branches: list[str] | None = None
    allow_protected_commit: bool = False
    # The subagents this agent started (task_result may only read its own).
    subagent_ids: list[str] = field(default_factory=list)
