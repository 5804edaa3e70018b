"""The contract every tool follows.

A tool is a plain async callable with a pydantic argument model. The agent loop validates the
model's raw arguments against ``Args`` and hands the tool a ``ToolContext``; the tool answers
with a ``ToolResult``. Tools never raise for expected failures (bad path, no match, timeout):
they return ``ToolResult(is_error=True)`` with a message the model can act on. Anything they do
raise is caught by ``execute`` and turned into such a result, so a tool can never crash an agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ValidationError

from stagecrew.tools.services import AgentServices


class ToolResult(BaseModel):
    """What a tool hands back: text for the model, plus metadata for people and logs.

    ``invalid_arguments`` marks the one recoverable error that is the model's fault (the call
    did not fit the tool's schema): the loop counts those toward ``model_format_failures``."""

    content: str
    is_error: bool = False
    invalid_arguments: bool = False
    metadata: dict[str, Any] = {}


class WorkspaceError(Exception):
    """A path resolved outside the workspace (``..``, absolute paths, symlinks pointing out)."""


@dataclass
class ProcessRegistry:
    """Process groups a tool started, so cancellation can kill every tree it left running."""

    pgids: set[int] = field(default_factory=set)

    def add(self, pgid: int) -> None:
        self.pgids.add(pgid)

    def discard(self, pgid: int) -> None:
        self.pgids.discard(pgid)

    def kill_all(self) -> list[int]:
        """SIGKILL every registered process group and its descendants; returns the pgids."""
        import psutil

        killed: list[int] = []
        for pgid in list(self.pgids):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            # A child may have started its own session; find it through the tree too.
            try:
                leader = psutil.Process(pgid)
                for child in leader.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            except psutil.Error:
                pass
            killed.append(pgid)
            self.pgids.discard(pgid)
        return killed


class PathFilter(Protocol):
    """The agent's path rules as tools apply them to what they find (``permissions.PathPolicy``
    fits): which found paths to show, why one is withheld, whether a path may be written.
    A protocol so this contract module need not import the policy engine."""

    def filter(
        self, tool: str, paths: Iterable[str], workspace: Path, *, contents: bool
    ) -> tuple[list[str], list[tuple[str, Any]]]: ...

    def withheld(self, tool: str, path: str, workspace: Path, *, contents: bool) -> Any: ...

    def denied(self, tool: str, path: str, workspace: Path) -> Any: ...


class PathRules(Protocol):
    """The permission checker as the build sandbox sees it (``permissions.PermissionChecker``
    fits): its rules, to find the deny rules that name paths, and its decision for one path.
    A protocol so this contract module need not import the policy engine."""

    @property
    def rules(self) -> Sequence[Any]: ...

    def check(
        self, tool_name: str, arguments: Mapping[str, Any] | None, workspace: Path
    ) -> Any: ...


SandboxMode = Literal["auto", "off", "required"]
NetworkMode = Literal["allow", "deny", "loopback"]


@dataclass(frozen=True)
class SandboxPolicy:
    """How bash runs when the agent may write (``sandbox.py`` turns it into a bwrap argv).

    ``mode``: ``auto`` confines commands where bubblewrap works and runs them plainly (with one
    notice) where it does not; ``required`` refuses to run them without it; ``off`` never
    confines. ``rules`` are the agent's permission rules: their deny paths are masked or made
    read-only for every command, so a path rule holds whatever the command line looks like.
    ``notify`` tells the person something once (that bash runs without a sandbox).
    """

    mode: SandboxMode = "auto"
    network: NetworkMode = "allow"
    # Paths commands may write besides the workspace and the private /tmp (``~`` expands).
    writable: tuple[str, ...] = ()
    rules: PathRules | None = None
    notify: Callable[[str], None] | None = None

    @classmethod
    def from_config(
        cls,
        config: Any,
        rules: PathRules | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> SandboxPolicy:
        """From ``config.SandboxConfig`` (anything with ``mode``, ``network``, ``writable``)."""
        return cls(
            mode=config.mode,
            network=config.network,
            writable=tuple(config.writable),
            rules=rules,
            notify=notify,
        )


@dataclass
class ToolContext:
    """Everything a tool may touch. One per agent; ``cwd`` persists between bash calls."""

    workspace: Path
    cwd: Path | None = None
    env: dict[str, str] | None = None
    # Variables tool processes must not see (the session's model keys).
    hidden_env: frozenset[str] = frozenset()
    read_only: bool = False
    # How bash is confined when not read-only; None: it runs unconfined (tools used directly,
    # outside an agent). The agent always sets one from its config and permission rules.
    sandbox: SandboxPolicy | None = None
    # The agent's path rules, for tools that filter what they find (grep, glob, ls) or check
    # each path they touch (apply_patch); None outside an agent (tests, scripts).
    path_policy: PathFilter | None = None
    session_dir: Path | None = None
    agent_id: str = "agent"
    processes: ProcessRegistry = field(default_factory=ProcessRegistry)
    # What the agent provides beyond the workspace (memory, subagents, ...), typed.
    services: AgentServices = field(default_factory=AgentServices)
    # A tool's own scratch between calls (todo list, background jobs), keyed by the tool.
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workspace = Path(os.path.realpath(self.workspace))
        if self.cwd is None:
            self.cwd = self.workspace


class Tool:
    """Base class: subclasses set ``name``, ``description``, ``Args`` and implement ``run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[BaseModel]]
    # True when the tool never changes files or state outside the agent (plan mode may use it).
    read_only: ClassVar[bool] = False
    # True when the tool confines itself in read-only mode (bash runs in a sandbox or an
    # allowlist), so plan mode may still call it.
    sandboxable: ClassVar[bool] = False

    async def run(self, args: Any, ctx: ToolContext) -> ToolResult:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    @functools.cache
    def schema(cls) -> dict[str, Any]:
        """The OpenAI function-calling schema the model sees (built once per class: pydantic's
        schema generation costs milliseconds and the agent sends the schemas every step)."""
        params = cls.Args.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": cls.name, "description": cls.description, "parameters": params},
        }


def describe_validation_error(tool: str, err: ValidationError) -> str:
    """A precise, model-readable error: which tool, which field, what was wrong."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(arguments)"
        parts.append(f"field '{loc}': {e['msg']}")
    return f"Invalid arguments for tool '{tool}': " + "; ".join(parts)


def parse_arguments(
    name: str, arguments: str | dict[str, Any] | None
) -> dict[str, Any] | ToolResult:
    """A call's arguments as a dict, or the error result that tells the model what is wrong
    with them (not JSON, not an object): the one reading every provider's calls share."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return ToolResult(
                content=f"Invalid arguments for tool '{name}': not valid JSON ({exc.msg} at "
                f"position {exc.pos}). Send the arguments as one JSON object.",
                is_error=True,
                invalid_arguments=True,
            )
    if arguments is None:
        return {}
    if not isinstance(arguments, dict):
        return ToolResult(
            content=f"Invalid arguments for tool '{name}': expected a JSON object, got "
            f"{type(arguments).__name__}.",
            is_error=True,
            invalid_arguments=True,
        )
    return arguments


async def execute(
    tools: dict[str, Tool], name: str, arguments: str | dict[str, Any] | None, ctx: ToolContext
) -> ToolResult:
    """Validate and run one tool call; every failure becomes an error result, never an exception."""
    tool = tools.get(name)
    if tool is None:
        known = ", ".join(sorted(tools))
        return ToolResult(content=f"Unknown tool '{name}'. Available tools: {known}", is_error=True)
    parsed = parse_arguments(name, arguments)
    if isinstance(parsed, ToolResult):
        return parsed
    arguments = parsed
    try:
        args = tool.Args.model_validate(arguments)
    except ValidationError as exc:
        return ToolResult(
            content=describe_validation_error(name, exc), is_error=True, invalid_arguments=True
        )
    if ctx.read_only and not (tool.read_only or tool.sandboxable):
        return ToolResult(
            content=f"Tool '{name}' is not allowed in read-only (plan) mode: it can change files.",
            is_error=True,
        )
    try:
        return await tool.run(args, ctx)
    except WorkspaceError as exc:
        return ToolResult(content=str(exc), is_error=True)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a tool bug must not crash the agent
        return ToolResult(
            content=f"Tool '{name}' failed: {type(exc).__name__}: {exc}", is_error=True
        )
