"""Turning the envelope stream into what a person (or a program) reads.

``text`` is for people: streamed model text, one folded line per tool call with its result
size, and a closing line. ``stream-json`` is the log's own lines, one event per line. ``json``
prints nothing until the end, then one result object.
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stagecrew.messages import (
    ActorFailed,
    AssistantMessage,
    Envelope,
    ModelDelta,
    ModelRetry,
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


DIFF_TOOLS = ("edit", "apply_patch")


def diff_lines(tool: str, raw: str) -> list[str] | None:
    """The change an ``edit`` or ``apply_patch`` call asked for, as diff lines.

    Built from the call's arguments because the tools' results describe the outcome in prose
    (a snippet of the file after the edit), not as a diff. Lines start with ``+``, ``-``, a
    space (context), ``@@`` or ``***`` (a file header). None for other tools or arguments
    that are not what the tool takes.
    """
    try:
        args = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(args, dict):
        return None
    if tool == "edit":
        old, new = args.get("old_string"), args.get("new_string")
        if not isinstance(old, str) or not isinstance(new, str):
            return None
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=2)
        # The ---/+++ headers name nothing and the @@ numbers count from the snippet, not the
        # file, so only the changed and context lines are worth showing.
        return [line for line in diff if not line.startswith(("---", "+++", "@@"))]
    if tool == "apply_patch":
        patch = args.get("patch")
        if not isinstance(patch, str):
            return None
        lines = patch.splitlines()
        return [
            line
            for line in lines
            if line.strip() not in ("*** Begin Patch", "*** End Patch", "*** End of File")
        ]
    return None


def diff_counts(lines: list[str]) -> tuple[int, int]:
    """Added and removed lines in :func:`diff_lines` output."""
    added = sum(1 for line in lines if line.startswith("+"))
    removed = sum(1 for line in lines if line.startswith("-"))
    return added, removed


def diff_markup(line: str) -> str:
    """One diff line as rich markup: additions green, removals red, headers cyan."""
    text = escape(line)
    if line.startswith("+"):
        return f"[green]{text}[/green]"
    if line.startswith("-"):
        return f"[red]{text}[/red]"
    if line.startswith(("@@", "***")):
        return f"[cyan]{text}[/cyan]"
    return f"[dim]{text}[/dim]"


def retry_line(retry: ModelRetry) -> str:
    """A model retry as one line: ``⟳ primary model retry 2/4 in 1.2 s: <cause>``."""
    who = f"{retry.role.value} model" if retry.role is not None else retry.model
    line = (
        f"⟳ {who} retry {retry.attempt}/{retry.max_attempts} in {retry.delay_s:.1f} s: "
        f"{retry.message}"
    )
    if retry.discard_partial:
        line += " (the partial answer above is discarded)"
    return line


def actor_table(rows: list[dict[str, Any]], title: str = "stagecrew actors") -> Table:
    """The ``ps`` rows as a table (the same columns as ``crew ps``)."""
    table = Table(title=title)
    for col in ("actor", "role", "parent", "state", "elapsed", "steps", "tokens", "cost", "RSS"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["actor_id"],
            row["role"],
            row["parent"] or "",
            row["state"],
            f"{row['elapsed_s']:.0f}s",
            str(row["steps"]),
            f"{row['tokens']:,}",
            f"${row['cost_usd']:.4f}",
            human_size(row["rss_bytes"]) if row["rss_bytes"] else "",
        )
    return table


class TextRenderer:
    """Envelopes as lines for people.

    ``diffs=True`` (the chat) also shows what an ``edit``/``apply_patch`` call changed, in
    colour, under its folded line when the diff has at most ``diff_max_lines`` lines; longer
    diffs are only counted (``+a -r``) so one big patch cannot push the conversation away.

    The error line of a failed session goes to ``err``: by default stderr when the renderer
    writes to stdout (``crew run``), else the same stream as everything else (the chat).
    """

    def __init__(
        self,
        out: TextIO | None = None,
        color: bool | None = None,
        *,
        diffs: bool = False,
        diff_max_lines: int = 30,
        err: TextIO | None = None,
    ) -> None:
        stream = out or sys.stdout
        self.console = Console(file=stream, highlight=False, soft_wrap=True, force_terminal=color)
        if err is None and out is not None:
            self.err_console = self.console
        else:
            self.err_console = Console(
                file=err or sys.stderr, highlight=False, soft_wrap=True, force_terminal=color
            )
        self.in_text = False
        self.pending_tools: dict[str, str] = {}
        self.diffs = diffs
        self.diff_max_lines = diff_max_lines
        self.pending_diffs: dict[str, list[str]] = {}

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
            if self.diffs and body.tool in DIFF_TOOLS:
                diff = diff_lines(body.tool, body.arguments)
                if diff:
                    self.pending_diffs[body.call_id] = diff
        elif isinstance(body, ToolFinished):
            label = self.pending_tools.pop(body.call_id, body.tool)
            diff = self.pending_diffs.pop(body.call_id, None)
            size = human_size(len(body.content.encode()))
            lines = body.content.count("\n") + 1 if body.content else 0
            mark = "[red]✗[/red]" if body.is_error else "[green]⏺[/green]"
            detail = f"{lines} lines, {size}"
            if diff and not body.is_error:
                added, removed = diff_counts(diff)
                detail += f", [green]+{added}[/green] [red]-{removed}[/red]"
            if body.is_error:
                first = escape(body.content.splitlines()[0][:120]) if body.content else "error"
                detail = f"[red]{first}[/red]"
            self.console.print(f"{mark} {label} [dim]→ {detail}[/dim]")
            if diff and not body.is_error and len(diff) <= self.diff_max_lines:
                for line in diff:
                    self.console.print("    " + diff_markup(line))
        elif isinstance(body, ModelRetry):
            self._end_text()
            self.console.print(f"[yellow]{escape(retry_line(body))}[/yellow]")
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
                self.err_console.print(f"[red]{escape(body.error)}[/red]")


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
