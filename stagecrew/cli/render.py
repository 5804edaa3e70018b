"""Turning the envelope stream into what a person (or a program) reads.

``text`` is for people: streamed model text, one folded line per tool call with its result
size, and a closing line. ``stream-json`` is the log's own lines, one event per line. ``json``
prints nothing until the end, then one result object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape

from stagecrew.messages import (
    ActorFailed,
    AssistantMessage,
    Envelope,
    ModelDelta,
    Notice,
    PermissionRequest,
    SessionFinished,
    SessionStarted,
    ToolFinished,
    ToolStarted,
)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GB"


def summarise_args(tool: str, raw: str, width: int = 90) -> str:
    try:
        args = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return raw[:width]
    if not isinstance(args, dict):
        return raw[:width]
    for key in ("command", "file_path", "pattern", "path", "url", "action", "prompt"):
        if key in args:
            text = str(args[key]).replace("\n", " ")
            return text if len(text) <= width else text[: width - 1] + "…"
    text = json.dumps(args)
    return text if len(text) <= width else text[: width - 1] + "…"


class TextRenderer:
    def __init__(self, out: TextIO | None = None, color: bool | None = None) -> None:
        stream = out or sys.stdout
        self.console = Console(file=stream, highlight=False, soft_wrap=True, force_terminal=color)
        self.in_text = False
        self.pending_tools: dict[str, str] = {}

    def _end_text(self) -> None:
        if self.in_text:
            self.console.print()
            self.in_text = False

    def handle(self, env: Envelope) -> None:
        body = env.body
        if isinstance(body, SessionStarted):
            self.console.print(
                f"[dim]session {env.session} · {escape(body.model)} · agent {body.profile}[/dim]"
            )
        elif isinstance(body, ModelDelta):
            self.console.print(escape(body.text), end="")
            self.in_text = True
        elif isinstance(body, AssistantMessage):
            self._end_text()
        elif isinstance(body, ToolStarted):
            self._end_text()
            self.pending_tools[body.call_id] = (
                f"{body.tool}({escape(summarise_args(body.tool, body.arguments))})"
            )
        elif isinstance(body, ToolFinished):
            label = self.pending_tools.pop(body.call_id, body.tool)
            size = human_size(len(body.content.encode()))
            lines = body.content.count("\n") + 1 if body.content else 0
            mark = "[red]✗[/red]" if body.is_error else "[green]⏺[/green]"
            detail = f"{lines} lines, {size}"
            if body.is_error:
                first = escape(body.content.splitlines()[0][:120]) if body.content else "error"
                detail = f"[red]{first}[/red]"
            self.console.print(f"{mark} {label} [dim]→ {detail}[/dim]")
        elif isinstance(body, Notice):
            self._end_text()
            style = {"info": "dim", "warning": "yellow", "error": "red"}[body.level]
            self.console.print(f"[{style}]• {escape(body.text)}[/{style}]")
        elif isinstance(body, PermissionRequest):
            self._end_text()
            self.console.print(
                f"[yellow]? permission: {escape(body.summary)} ({escape(body.reason)})[/yellow]"
            )
        elif isinstance(body, ActorFailed):
            self._end_text()
            self.console.print(f"[red]✗ actor {body.actor_id} failed: {escape(body.error)}[/red]")
        elif isinstance(body, SessionFinished):
            self._end_text()
            ok = body.stop_reason.success
            mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
            tokens = body.usage.total_tokens
            line = (
                f"{mark} {body.stop_reason.value} · {body.steps} steps · {tokens:,} tokens · "
                f"${body.usage.cost_usd:.4f} · {body.duration_s:.1f} s"
            )
            self.console.print(line)
            if body.error:
                self.console.print(f"[red]{escape(body.error)}[/red]")


def result_object(session: str, finished: SessionFinished | None, log_path: Path) -> dict[str, Any]:
    """The one object ``--output-format json`` prints (the shape of Claude Code's result)."""
    if finished is None:
        return {
            "type": "result",
            "session_id": session,
            "stop_reason": "error",
            "success": False,
            "error": "the session ended without a result (the supervisor connection was lost)",
            "log": str(log_path),
        }
    return {
        "type": "result",
        "session_id": session,
        "stop_reason": finished.stop_reason.value,
        "success": finished.stop_reason.success,
        "result": finished.summary,
        "turns": finished.steps,
        "usage": {
            "prompt_tokens": finished.usage.prompt_tokens,
            "completion_tokens": finished.usage.completion_tokens,
            "total_tokens": finished.usage.total_tokens,
        },
        "cost_usd": finished.usage.cost_usd,
        "duration_s": finished.duration_s,
        "error": finished.error,
        "log": str(log_path),
    }
