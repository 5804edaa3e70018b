"""todo: the agent's visible task list (Claude Code's TodoWrite).

Long autonomous work drifts; a list the agent rewrites as it goes keeps it honest and shows the
user where it is. The whole list is replaced on every call (simplest for the model to reason
about), kept in ``ctx.state["todos"]``, and only one item may be in progress at a time so the
list says what the agent is doing *now*.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from stagecrew.tools.base import Tool, ToolContext, ToolResult

_MARKS = {"completed": "[x]", "in_progress": "[~]", "pending": "[ ]"}


class TodoItem(BaseModel):
    content: str = Field(min_length=1, description="The task, imperative: 'Run the tests'.")
    status: Literal["pending", "in_progress", "completed"] = Field(
        description="pending, in_progress (at most one) or completed."
    )
    id: str | None = Field(default=None, description="Stable id (assigned if omitted).")
    # camelCase on purpose: Claude Code's field name, which models send.
    activeForm: str | None = Field(
        default=None, description="Optional present-continuous form: 'Running the tests'."
    )


class TodoArgs(BaseModel):
    todos: list[TodoItem] = Field(description="The complete, updated task list.")


def render_todos(todos: list[dict[str, Any]]) -> str:
    if not todos:
        return "(the task list is empty)"
    lines = []
    for item in todos:
        text = item["content"]
        if item["status"] == "in_progress" and item.get("activeForm"):
            text = f"{text} ({item['activeForm']})"
        lines.append(f"{_MARKS[item['status']]} {text}")
    return "\n".join(lines)


def _todo(args: TodoArgs, ctx: ToolContext) -> ToolResult:
    active = [t for t in args.todos if t.status == "in_progress"]
    if len(active) > 1:
        names = "; ".join(t.content for t in active)
        return ToolResult(
            content=f"{len(active)} tasks are in_progress ({names}); keep exactly one "
            "in_progress and mark the others pending or completed.",
            is_error=True,
        )
    ids = [t.id for t in args.todos if t.id]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        return ToolResult(
            content=f"duplicate todo ids: {', '.join(duplicates)}; ids must be unique.",
            is_error=True,
        )
    used = set(ids)
    counter = 0
    todos: list[dict[str, Any]] = []
    for item in args.todos:
        tid = item.id
        if not tid:
            counter += 1
            while str(counter) in used:
                counter += 1
            tid = str(counter)
            used.add(tid)
        todos.append(
            {
                "id": tid,
                "content": item.content.strip(),
                "status": item.status,
                "activeForm": item.activeForm,
            }
        )
    ctx.state["todos"] = todos
    done = sum(t["status"] == "completed" for t in todos)
    summary = f"Task list updated: {done}/{len(todos)} completed."
    return ToolResult(
        content=f"{summary}\n{render_todos(todos)}",
        metadata={"todos": todos},
    )


class Todo(Tool):
    name = "todo"
    description = (
        "Write your task list (replaces the whole list each call). Use it for work with "
        "several steps: add the steps as pending, mark one in_progress before you start it "
        "(exactly one at a time), and mark it completed as soon as it is done (not in batches). "
        "Each item: content (the task), status (pending | in_progress | completed), optional "
        "id. The user sees this list; keep it accurate."
    )
    Args = TodoArgs
    read_only = True  # it changes no files, only the agent's own state

    async def run(self, args: TodoArgs, ctx: ToolContext) -> ToolResult:
        return _todo(args, ctx)
