"""A tool provider for the test suite: the smallest real one, registered as kind ``echo``.

It shows what adding a provider takes — this module and one line in
``tools.providers.PROVIDERS`` — and lets tests drive a provider's tools end to end through
the agent, the permission rules and plan mode. ``echo__say`` answers with its text (plan mode
may call it); ``echo__write_note`` writes a file under the workspace (it changes files, so
plan mode refuses it). The ``prefix`` option shows options reaching the provider.
"""

from __future__ import annotations

from typing import Any

from stagecrew.tools.base import ToolContext, ToolResult
from stagecrew.tools.paths import resolve_path, safe_write_bytes
from stagecrew.tools.providers import ProviderEnv, ProviderSpec, ToolSpec


class EchoProvider:
    def __init__(self, name: str, prefix: str) -> None:
        self.name = name
        self.prefix = prefix

    def specs(self) -> list[ToolSpec]:
        text = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        note = {
            "type": "object",
            "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
            "required": ["path", "text"],
        }
        return [
            ToolSpec("echo__say", "Say the text back.", text, read_only=True, provider=self.name),
            ToolSpec("echo__write_note", "Write text to a file.", note, provider=self.name),
        ]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        text = arguments.get("text")
        if not isinstance(text, str):
            return ToolResult(
                content=f"Invalid arguments for tool '{name}': field 'text' must be a string",
                is_error=True,
                invalid_arguments=True,
            )
        if name == "echo__say":
            return ToolResult(content=f"{self.prefix}{text}")
        path = resolve_path(ctx, str(arguments.get("path", "")))
        safe_write_bytes(ctx, path, text.encode())
        return ToolResult(content=f"wrote {len(text)} characters to {path.name}")


async def create(spec: ProviderSpec, env: ProviderEnv) -> EchoProvider:
    return EchoProvider(spec.name or "echo", str(spec.options.get("prefix", "echo: ")))
