"""Turning the envelope stream into what a person (or a program) reads.

``text`` is for people: streamed model text, one folded line per tool call with its result
size, and a closing line. ``stream-json`` is the log's own lines, one event per line. ``json``
prints nothing until the end, then one result object.
"""

from __future__ import annotations

import difflib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from stagecrew.messages import (
    ActorFailed,
    AssistantMessage,
    CandidateFinished,
    CheckpointWritten,
    Envelope,
    HookRan,
    JudgeVerdict,
    ModelDelta,
    ModelRetry,
    Notice,
    PermissionRequest,
    ServiceEvent,
    SessionFinished,
    SessionStarted,
    ToolFinished,
    ToolStarted,
)
from stagecrew.sessions.events import describe, hook_level, retry_line, summarise_args

# The terminal style of each level of ``stagecrew.sessions.events`` and of each line style of
# ``stagecrew.sessions.text``.
LINE_STYLES = {
    "dim": "dim",
    "info": "",
    "ok": "green",
    "warning": "yellow",
    "error": "red",
    "header": "dim",
    "prompt": "bold cyan",
    "finish-ok": "green",
}


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GB"


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


@dataclass(frozen=True)
class Column:
    """A column of a table that must fit the terminal. An ``id`` column is printed whole
    (never wrapped or cut: ids are what people copy into ``crew cancel`` and ``crew show``);
    ``drop`` orders the columns left out when the table is too wide (1 first), None keeps
    the column and lets it wrap (always beyond ``max_width``)."""

    header: str
    id: bool = False
    drop: int | None = None
    justify: Literal["left", "right"] = "left"
    # Wrap beyond this many cells (a long title must not push every other column out).
    max_width: int | None = None


def fitted_table(
    columns: list[Column], rows: list[list[str]], width: int, title: str | None = None
) -> Table:
    """``rows`` as a table no wider than ``width``: columns are dropped in their ``drop``
    order until the table fits at its natural width, and only then may the others wrap."""
    keep = list(range(len(columns)))
    droppable = sorted(
        (i for i, c in enumerate(columns) if c.drop is not None), key=lambda i: columns[i].drop
    )
    # Measured unconstrained: a console as narrow as the terminal would cap the measure.
    console = Console(width=100_000, file=io.StringIO())

    def build(indices: list[int]) -> Table:
        table = Table(title=title)
        for i in indices:
            col = columns[i]
            widest = max([cell_len(col.header), *(cell_len(row[i]) for row in rows)])
            table.add_column(
                col.header,
                justify=col.justify,
                no_wrap=col.id,
                min_width=widest if col.id else None,
                max_width=None if col.id else col.max_width,
                overflow="fold",
            )
        for row in rows:
            table.add_row(*(row[i] for i in indices))
        return table

    table = build(keep)
    while droppable and Measurement.get(console, console.options, table).maximum > width:
        keep.remove(droppable.pop(0))
        table = build(keep)
    return table


# In 80 columns: actor, role, state, elapsed, steps, tokens (the parent id is the widest
# cell after the actor's own, and the tree is still readable from the ids).
ACTOR_COLUMNS = [
    Column("actor", id=True),
    Column("role", drop=7),
    Column("parent", id=True, drop=2),
    Column("state"),
    Column("elapsed", drop=6, justify="right"),
    Column("steps", drop=4, justify="right"),
    Column("tokens", drop=5, justify="right"),
    Column("cost", drop=3, justify="right"),
    Column("RSS", drop=1, justify="right"),
]


def actor_table(
    rows: list[dict[str, Any]], title: str = "stagecrew actors", width: int | None = None
) -> Table:
    """The ``ps`` rows as a table (the columns of ``crew ps``) that fits ``width`` (the
    terminal's by default) with every actor id whole."""
    cells = [
        [
            row["actor_id"],
            row["role"],
            row["parent"] or "",
            row["state"],
            f"{row['elapsed_s']:.0f}s",
            str(row["steps"]),
            f"{row['tokens']:,}",
            f"${row['cost_usd']:.4f}",
            human_size(row["rss_bytes"]) if row["rss_bytes"] else "",
        ]
        for row in rows
    ]
    return fitted_table(ACTOR_COLUMNS, cells, width or Console().width, title=title)


def styled(text: str, level: str) -> str:
    """``text`` as rich markup in the style of its level (escaped: logs hold any text)."""
    style = LINE_STYLES.get(level, "")
    return f"[{style}]{escape(text)}[/{style}]" if style else escape(text)


SIDE_EVENTS = (JudgeVerdict, CandidateFinished, CheckpointWritten, HookRan, ServiceEvent)


def _quiet_live(body: Any) -> bool:
    """Events too routine for the live view (``crew show`` lists them all): a hook that passed
    without a word, a service starting or stopping on schedule."""
    if isinstance(body, HookRan):
        return hook_level(body) == "dim"
    if isinstance(body, ServiceEvent):
        return body.state in ("starting", "stopped")
    return False


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

    def _side_event(self, body: Any) -> None:
        """Judge verdicts, Max Mode candidates, checkpoints, hooks and services: the line
        ``crew show`` gives them too."""
        line = describe(body)
        if line is not None:
            self._end_text()
            self.console.print(styled(line.text, line.level))

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
        elif isinstance(body, SIDE_EVENTS):
            if not _quiet_live(body):
                self._side_event(body)
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
