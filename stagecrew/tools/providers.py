"""Tool providers: where an agent's tools come from.

A provider lists tool specs at runtime (name, description, JSON schema, whether plan mode may
call it) and executes calls. The built-in tools are one provider; MCP servers, skills and
language servers are others. ``ToolSet`` is the one place an agent's tools are put together
from its profile and the session's providers, and the one path a call takes: JSON arguments
parsed, read-only mode enforced, the provider called, every failure turned into an error
result. Permission rules, hooks and argument repair sit in the agent loop in front of
``ToolSet.execute`` and so apply to every provider's tools alike.

Adding a provider is one module with a class that has ``name``, ``specs()`` and ``call()``,
plus its registration where the agent's providers are assembled.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from stagecrew.oneline import one_line
from stagecrew.tools.base import (
    Tool,
    ToolContext,
    ToolResult,
    WorkspaceError,
    execute,
    parse_arguments,
)


@dataclass(frozen=True)
class ToolSpec:
    """What the model is shown of a tool, and what the loop needs to police it."""

    name: str
    description: str
    parameters: dict[str, Any]
    # Plan mode may call it: it changes nothing (or confines itself, like sandboxed bash).
    read_only: bool = False
    provider: str = "builtin"

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling schema."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class ToolProvider(Protocol):
    """A source of tools. ``call`` receives arguments already parsed into a dict and must
    never raise for an expected failure: it returns ``ToolResult(is_error=True)``."""

    name: str

    def specs(self) -> list[ToolSpec]: ...

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult: ...


class BuiltinTools:
    """The built-in tools as a provider (validated by their pydantic ``Args``)."""

    name = "builtin"

    def __init__(self, tools: dict[str, Tool]) -> None:
        self.tools = tools

    def specs(self) -> list[ToolSpec]:
        out = []
        for tool in self.tools.values():
            fn = tool.schema()["function"]
            out.append(
                ToolSpec(
                    name=tool.name,
                    description=fn["description"],
                    parameters=fn["parameters"],
                    read_only=tool.read_only or tool.sandboxable,
                )
            )
        return out

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await execute(self.tools, name, arguments, ctx)


class ToolSet:
    """An agent's tools: the allowed specs of its providers, by name, and how to run them."""

    def __init__(self, providers: Iterable[ToolProvider], allowed: list[str] | None = None) -> None:
        names = set(allowed) if allowed is not None and "*" not in allowed else None
        self.providers: dict[str, ToolProvider] = {}
        self.specs: dict[str, ToolSpec] = {}
        self.withheld: set[str] = set()
        for provider in providers:
            for spec in provider.specs():
                if spec.name in self.specs:
                    continue  # the first provider to name a tool keeps it
                if names is not None and not _allowed(spec, names):
                    self.withheld.add(spec.name)
                    continue
                self.specs[spec.name] = spec
                self.providers[spec.name] = provider

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __iter__(self) -> Any:
        return iter(self.specs)

    def schemas(self) -> list[dict[str, Any]]:
        return [spec.schema() for spec in self.specs.values()]

    async def execute(
        self, name: str, arguments: str | dict[str, Any] | None, ctx: ToolContext
    ) -> ToolResult:
        """Run one call; every failure becomes an error result, never an exception."""
        spec = self.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs))
            return ToolResult(
                content=f"Unknown tool '{name}'. Available tools: {known}", is_error=True
            )
        parsed = parse_arguments(name, arguments)
        if isinstance(parsed, ToolResult):
            return parsed
        if ctx.read_only and not spec.read_only:
            return ToolResult(
                content=f"Tool '{name}' is not allowed in read-only (plan) mode: it can change "
                "files.",
                is_error=True,
            )
        try:
            return await self.providers[name].call(name, parsed, ctx)
        except WorkspaceError as exc:
            return ToolResult(content=str(exc), is_error=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a provider bug must not crash the agent
            return ToolResult(
                content=f"Tool '{name}' failed: {type(exc).__name__}: {exc}", is_error=True
            )


def _allowed(spec: ToolSpec, names: set[str]) -> bool:
    """A profile's ``tools`` list names tools, or whole MCP servers as ``mcp__server``."""
    if spec.name in names:
        return True
    return any(spec.name.startswith(f"{n}__") for n in names if n.startswith("mcp__"))


# -- session providers: declared in the spec, built where the agent runs ---------------------


class ProviderSpec(BaseModel):
    """A provider an agent should have besides the built-in tools: its ``kind`` (a key of
    ``PROVIDERS``), a ``name`` for messages, and the kind's own options."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str = ""
    options: dict[str, Any] = {}


@dataclass
class ProviderEnv:
    """What a provider factory may use. ``service(kind, options)`` returns the session's
    service of that kind as a port object (a per-session actor under Ray, an in-process
    object otherwise), so a provider never needs to know where it runs."""

    session: str
    actor_id: str
    workspace: str
    service: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None


ProviderFactory = Callable[[ProviderSpec, ProviderEnv], Awaitable[ToolProvider]]

# kind -> "module:factory". Adding a provider: one module with an async factory returning a
# ToolProvider, and one line here.
PROVIDERS: dict[str, str] = {
    "echo": "stagecrew.testing.echo_provider:create",
    "mcp": "stagecrew.mcp.provider:create",
    "skills": "stagecrew.skills.provider:create",
}


async def build_providers(
    specs: list[ProviderSpec], env: ProviderEnv
) -> tuple[list[ToolProvider], list[str]]:
    """The spec's providers, built; one that cannot be built is a notice line, and the agent
    goes on without it (a broken extension must not cost the person their session)."""
    built: list[ToolProvider] = []
    notices: list[str] = []
    for spec in specs:
        label = spec.name or spec.kind
        target = PROVIDERS.get(spec.kind)
        if target is None:
            notices.append(
                f"tool provider '{label}': unknown kind '{spec.kind}' (known: "
                f"{', '.join(sorted(PROVIDERS))})"
            )
            continue
        module, _, attr = target.partition(":")
        try:
            factory: ProviderFactory = getattr(importlib.import_module(module), attr)
            provider = await factory(spec, env)
            built.append(provider)
            notices.extend(getattr(provider, "notices", []))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            notices.append(f"tool provider '{label}' is unavailable: {one_line(exc)}")
    return built, notices


class ToolServicePort(Protocol):
    """A tool service seen from the agent: specs as dicts, calls as result dicts (what
    crosses a process boundary)."""

    async def specs(self) -> list[dict[str, Any]]: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]: ...

    async def notices(self) -> list[str]: ...


class ServiceTools:
    """A ToolProvider over a ``ToolServicePort`` (e.g. the session's MCP service): the specs
    are fetched once when the agent starts; calls go to the service."""

    def __init__(self, name: str, port: ToolServicePort, specs: list[ToolSpec]) -> None:
        self.name = name
        self.port = port
        self._specs = specs
        # Lines a person should see about this provider (a server that did not start).
        self.notices: list[str] = []

    @classmethod
    async def connect(cls, name: str, port: ToolServicePort) -> ServiceTools:
        return cls(name, port, [ToolSpec(**s) for s in await port.specs()])

    def specs(self) -> list[ToolSpec]:
        return list(self._specs)

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult.model_validate(await self.port.call(name, arguments))
