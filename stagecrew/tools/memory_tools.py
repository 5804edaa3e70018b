"""The ``memory`` and ``tasks`` tools: how a model reaches its persistent memory.

Plan mode (``ToolContext.read_only``): both tools declare ``read_only = True`` so plan mode can
call them at all - searching memory and listing tasks are exactly what planning needs - and
then decide per action, because ``execute`` only checks the class flag:

* ``memory search`` is allowed; ``memory note`` is allowed too, since ``notes.md`` is the
  agent's own session scratchpad (agent-internal state, like a todo list);
* ``memory save`` is refused in plan mode: project ``MEMORY.md`` is shared by every future
  session and the person, so it is a real change outside the agent;
* every ``tasks`` action is allowed: the ledger lives in the session directory and a plan
  naturally is a task tree. Nothing outside the session changes.

The tools never write ``MEMORY.md`` themselves: ``save`` calls the async callable the lead puts
in ``ctx.services.memory_writer`` (``(section, text) -> str``), so project memory keeps a
single writer. Paths come from ``ctx.services.memory_paths`` when the agent provides them, else
from ``ctx.workspace`` and ``ctx.session_dir``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from stagecrew.memory.index import Hit, MemoryIndex
from stagecrew.memory.layers import (
    MEMORY_SECTIONS,
    SOURCE_KINDS,
    MemoryPaths,
    append_note,
    resolve_memory_section,
)
from stagecrew.memory.tasks import TaskError, TaskLedger
from stagecrew.tools.base import Tool, ToolContext, ToolResult


def memory_paths(ctx: ToolContext) -> MemoryPaths:
    """The memory paths for this agent (the agent sets them in ``ctx.services``)."""
    services = ctx.services
    if services.memory_paths is None:
        config_dir = services.user_config_dir
        services.memory_paths = MemoryPaths.for_session_dir(
            ctx.workspace, ctx.session_dir, Path(config_dir) if config_dir else None
        )
    return services.memory_paths


def memory_index(ctx: ToolContext) -> MemoryIndex:
    """One open index per agent, kept in ``ctx.services`` so its caches survive calls."""
    if ctx.services.memory_index is None:
        ctx.services.memory_index = MemoryIndex(memory_paths(ctx).index_db)
    return ctx.services.memory_index


def _where(hit: Hit, root: Path) -> str:
    source = hit.source
    if not source.startswith("session:") and Path(source).is_relative_to(root):
        source = str(Path(source).relative_to(root))
    session = f" · session {hit.session}" if hit.session and hit.kind != "archive" else ""
    return f"{hit.kind}{session} · {source}"


class MemoryArgs(BaseModel):
    action: Literal["search", "save", "note"] = Field(
        description="search: find past knowledge, decisions and archived conversation; "
        "save: store a durable fact in project memory; note: append to your session notes"
    )
    query: str | None = Field(
        default=None,
        description="search: words, identifiers, paths (src/app.py:42), flags or ports",
    )
    text: str | None = Field(default=None, description="save/note: the text to store")
    section: str | None = Field(
        default=None,
        description="save: one of " + ", ".join(MEMORY_SECTIONS) + " (default Durable knowledge)",
    )
    kinds: list[str] | None = Field(
        default=None,
        description="search: only these sources: " + ", ".join(SOURCE_KINDS),
    )
    limit: int = Field(default=8, ge=1, le=20, description="search: max results")


class MemoryTool(Tool):
    """Search, save to and note into persistent memory (see the module docstring)."""

    name = "memory"
    description = (
        "Persistent memory across sessions. 'search' finds project memory, past checkpoints, "
        "notes, task progress and archived conversation (including tool outputs that were "
        "masked from your context) - use it before re-deriving something. 'note' appends to "
        "your session scratchpad. 'save' stores a durable fact, rule or decision in project "
        "memory for every future session; save only what stays true."
    )
    Args = MemoryArgs
    read_only: ClassVar[bool] = True

    async def run(self, args: MemoryArgs, ctx: ToolContext) -> ToolResult:
        if args.action == "search":
            return await self._search(args, ctx)
        if not args.text or not args.text.strip():
            return ToolResult(content=f"'{args.action}' needs 'text'.", is_error=True)
        if args.action == "note":
            paths = memory_paths(ctx)
            if paths.session_id is None:
                return ToolResult(content="No session directory: notes need one.", is_error=True)
            await asyncio.to_thread(append_note, paths.notes, args.text)
            return ToolResult(content="Noted in notes.md.", metadata={"path": str(paths.notes)})
        return await self._save(args, ctx)

    async def _search(self, args: MemoryArgs, ctx: ToolContext) -> ToolResult:
        if not args.query or not args.query.strip():
            return ToolResult(content="'search' needs a 'query'.", is_error=True)
        bad = [k for k in args.kinds or [] if k not in SOURCE_KINDS]
        if bad:
            return ToolResult(
                content=f"Unknown kinds {bad}; use any of: {', '.join(SOURCE_KINDS)}.",
                is_error=True,
            )
        paths = memory_paths(ctx)
        index = memory_index(ctx)

        def work() -> list[Hit]:
            index.sync_files(paths.sources())
            return index.search(args.query or "", limit=args.limit, kinds=args.kinds)

        hits = await asyncio.to_thread(work)
        if not hits:
            return ToolResult(
                content=f"Nothing in memory matches {args.query!r}. Try other words; exact "
                "identifiers, paths and flags work well.",
                metadata={"hits": 0},
            )
        lines = [f"{len(hits)} result(s) for {args.query!r}, best first:"]
        for i, hit in enumerate(hits, 1):
            snippet = " ".join(hit.snippet.split()) or hit.text[:200]
            lines.append(f"{i}. [{_where(hit, paths.project_root)} · {hit.heading}]\n   {snippet}")
        return ToolResult(content="\n".join(lines), metadata={"hits": len(hits)})

    async def _save(self, args: MemoryArgs, ctx: ToolContext) -> ToolResult:
        if ctx.read_only:
            return ToolResult(
                content="Saving to project memory changes MEMORY.md for every future session, "
                "so it is not allowed in plan mode. Use 'note' for now.",
                is_error=True,
            )
        try:
            section = resolve_memory_section(args.section)
        except ValueError as exc:
            return ToolResult(content=str(exc), is_error=True)
        writer = ctx.services.memory_writer
        if writer is None:
            return ToolResult(
                content="Project memory is not writable in this session (no memory writer). "
                "Use 'note' instead.",
                is_error=True,
            )
        try:
            message = await writer(section, args.text or "")
        except ValueError as exc:
            return ToolResult(content=str(exc), is_error=True)
        return ToolResult(content=str(message), metadata={"section": section})


class TasksArgs(BaseModel):
    action: Literal["create", "start", "progress", "done", "block", "abandon", "list"] = Field(
        description="create a task, change its status, log progress, or list the tree"
    )
    id: str | None = Field(default=None, description="task id such as T1 or T1.2")
    title: str | None = Field(default=None, description="create: what the task is")
    parent: str | None = Field(default=None, description="create: parent task id (subtask)")
    note: str | None = Field(
        default=None,
        description="progress: the note; done: summary; block/abandon: the reason",
    )


class TasksTool(Tool):
    """The session's task tree (see ``stagecrew.memory.tasks``)."""

    name = "tasks"
    description = (
        "Your task tree for this session; it survives context rebuilds. Break work into "
        "tasks (ids T1, T1.1 …), 'start' one before working on it, log 'progress' notes as "
        "you go, and mark it 'done' with a summary, or 'block'/'abandon' with a reason. "
        "'list' shows the tree: [ ] pending, [~] in progress, [x] done, [!] blocked, "
        "[-] abandoned."
    )
    Args = TasksArgs
    read_only: ClassVar[bool] = True

    async def run(self, args: TasksArgs, ctx: ToolContext) -> ToolResult:
        if ctx.session_dir is None:
            return ToolResult(content="No session directory: tasks need one.", is_error=True)
        ledger = TaskLedger(Path(ctx.session_dir) / "tasks", ctx.agent_id)
        try:
            return await asyncio.to_thread(self._apply, ledger, args)
        except TaskError as exc:
            return ToolResult(content=str(exc), is_error=True)

    @staticmethod
    def _apply(ledger: TaskLedger, args: TasksArgs) -> ToolResult:
        action, note = args.action, args.note or ""
        if action == "list":
            return ToolResult(content=ledger.render_ledger())
        if action == "create":
            task = ledger.create(args.title or "", args.parent)
            head = f"Created {task.id}: {task.title}"
        else:
            if not args.id:
                return ToolResult(content=f"'{action}' needs the task 'id'.", is_error=True)
            if action == "start":
                task = ledger.start(args.id)
            elif action == "progress":
                task = ledger.progress(args.id, note)
            elif action == "done":
                task = ledger.done(args.id, note)
            elif action == "block":
                task = ledger.block(args.id, note)
            else:
                task = ledger.abandon(args.id, note)
            head = f"{task.id} is now {task.status.value}."
        return ToolResult(
            content=f"{head}\n\n{ledger.render_ledger()}",
            metadata={"id": task.id, "status": task.status.value},
        )
