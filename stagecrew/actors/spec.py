"""What an agent is asked to do and what it reports back, and the ports it talks through.

Kept apart from the loop (``agent.py``) so the context manager, the subagent builder, the
session builder and the orchestrator can speak about an agent without importing its loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from stagecrew.actors.goal import GoalSpec
from stagecrew.config import SandboxConfig, StuckConfig
from stagecrew.messages import (
    ActorRole,
    Message,
    ModelRequest,
    ModelRole,
    ModelSpecWire,
    PermissionRequest,
    StopReason,
    StreamItem,
    Usage,
)
from stagecrew.tools.providers import ProviderSpec

# The context window assumed when neither the config nor the profile names one: a safe floor
# for current hosted models.
DEFAULT_CONTEXT_WINDOW = 128_000

DEFAULT_SYSTEM_PROMPT = """You are stagecrew, a coding agent working in a software repository.
Use the tools to read, search, edit and run code. Read a file before you edit it. Keep edits
minimal and run the project's tests to verify your work. When the task is complete, answer
with a short summary of what you changed and how you verified it, without calling a tool."""


class ModelPort(Protocol):
    def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]: ...


class EventSink(Protocol):
    def emit(self, body: Message) -> None: ...


PermissionPort = Callable[[PermissionRequest], Awaitable[str]]


class AgentSpec(BaseModel):
    """Everything an agent needs to run; built by the CLI or a parent agent, sent to an actor."""

    model_config = ConfigDict(extra="forbid")

    session: str
    actor_id: str
    role: ActorRole = ActorRole.PRIMARY
    model_role: ModelRole = ModelRole.PRIMARY
    parent: str | None = None
    workspace: str
    prompt: str
    profile: str = "build"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    tools: list[str] | None = None  # None: every tool
    read_only: bool = False
    permissions: list[str] = []
    ask_policy: str = "deny"
    model: ModelSpecWire
    fallback_model: ModelSpecWire | None = None
    max_steps: int = 100
    wall_time_s: float = 3600.0
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_format_failures: int = 3
    session_dir: str | None = None
    # A transcript to continue from (resume); empty means start from the prompt.
    messages: list[dict[str, Any]] = []
    stuck: StuckConfig = StuckConfig()
    # What subagents need to be built by this agent: the configured model per role, where
    # the person's profiles live, and how deep the tree may grow.
    role_models: dict[str, ModelSpecWire] = {}
    user_config_dir: str | None = None
    depth: int = 0
    max_depth: int = 2
    # The model's context window in tokens: checkpoints and rebuilds are fractions of it.
    context_window: int = Field(default=DEFAULT_CONTEXT_WINDOW, gt=0)
    # The person's goal in their own words (checkpoint Active intent); None: ``prompt``.
    # A resumed run sets it, since its ``prompt`` holds only what the person added.
    goal: str | None = None
    # Open tasks these earlier actors own are handed to this one at start (a resumed run
    # continues the tree its predecessor built; only an owner may change a task).
    adopt_tasks_from: list[str] = []
    # A verified stop condition (/goal): when the model stops, the judge rules on evidence.
    goal_spec: GoalSpec | None = None
    # Tool providers besides the built-in tools (MCP servers, ...); subagents inherit them.
    providers: list[ProviderSpec] = []
    # Hooks (Claude Code's contract) as (source, raw ``hooks`` object) in config order,
    # validated when the session was prepared; the agent parses and runs them.
    hooks: list[tuple[str, dict[str, Any]]] = []
    # Model key variables tool processes may still see (config ``tools.env_passthrough``);
    # every other one is removed from their environment.
    tool_env_passthrough: list[str] = []
    # How bash is confined in build mode (config ``sandbox``); subagents inherit it.
    sandbox: SandboxConfig = SandboxConfig()
    # Mirror Claude Code's project memory into the index (config ``memory.cc_index``).
    cc_index: bool = False


class AgentResult(BaseModel):
    actor_id: str
    stop_reason: StopReason
    summary: str = ""
    steps: int = 0
    usage: Usage = Usage()
    error: str | None = None
    # The transcript at the stop, so an interactive session's next turn continues from it.
    messages: list[dict[str, Any]] = []
