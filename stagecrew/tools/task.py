"""``task`` and ``task_result``: fan work out to subagents, in parallel, and collect results.

The tools are plain: they talk to a ``SubagentPort`` the agent's host puts in
``ctx.services.subagents`` (the Ray host routes it through the supervisor, which starts each
subagent as its own actor from the warm pool). Waiting is cancellable: if the parent is
cancelled while it waits, the children it started are cancelled with it, never orphaned.

The model picks a subagent by ``subagent_type``, so ``task`` lists the agent profiles it may
pick from (stagecrew's and Claude Code's, from ``stagecrew.profiles.profile_descriptions``) with
their descriptions in its own description, as Claude Code's Task tool does: a profile the model
has never heard of is a profile it never uses. ``Task(agents)`` builds that tool; ``Task()``
without them keeps the plain description.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, model_validator

from stagecrew.tools.base import Tool, ToolContext, ToolResult
from stagecrew.tools.services import SubagentPort


class TaskItem(BaseModel):
    prompt: str = Field(min_length=1, description="The complete task for the subagent.")
    description: str = Field(default="", description="3-5 words naming the task.")
    subagent_type: str = Field(default="build", description="Agent profile, e.g. build or plan.")


class TaskArgs(BaseModel):
    description: str = Field(default="", description="3-5 words naming the task.")
    prompt: str | None = Field(default=None, description="The task for one subagent.")
    subagent_type: str = Field(default="build", description="Agent profile for `prompt`.")
    tasks: list[TaskItem] | None = Field(
        default=None, description="Several tasks to run in parallel, one subagent each."
    )
    run_in_background: bool = Field(
        default=False,
        description="Return at once with the subagent ids; collect results with task_result.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> TaskArgs:
        if (self.prompt is None) == (self.tasks is None):
            raise ValueError("give either 'prompt' (one subagent) or 'tasks' (several), not both")
        if self.tasks is not None and not self.tasks:
            raise ValueError("'tasks' is empty")
        return self

    def items(self) -> list[TaskItem]:
        if self.tasks is not None:
            return self.tasks
        assert self.prompt is not None
        return [
            TaskItem(
                prompt=self.prompt, description=self.description, subagent_type=self.subagent_type
            )
        ]


def _port(ctx: ToolContext) -> SubagentPort | None:
    return ctx.services.subagents


def format_results(results: dict[str, dict[str, Any]]) -> str:
    parts = []
    for actor_id, res in results.items():
        head = f"## subagent {actor_id}: {res.get('stop_reason', 'unknown')}"
        body = res.get("summary") or res.get("error") or "(no result)"
        parts.append(f"{head}\n{body}")
    return "\n\n".join(parts)


# One line per profile in the listing; longer descriptions are cut (the listing is sent with
# every request, and the first sentence says when to use an agent).
_DESCRIPTION_CHARS = 300


def describe_agents(agents: Mapping[str, str]) -> str:
    """The listing of agent profiles appended to ``task``'s description."""
    if not agents:
        return ""
    lines = []
    for name, text in agents.items():
        flat = " ".join(text.split())
        if len(flat) > _DESCRIPTION_CHARS:
            flat = flat[: _DESCRIPTION_CHARS - 1].rstrip() + "…"
        lines.append(f"- {name}: {flat}")
    return "\n\nAgent profiles for `subagent_type`:\n" + "\n".join(lines)


class Task(Tool):
    name = "task"
    description = (
        "Start subagents to work on tasks in parallel, each in its own process with its own "
        "context. Give `prompt` for one subagent or `tasks` for several at once (they run "
        "concurrently). Each prompt must be complete on its own: the subagent sees nothing of "
        "this conversation. By default waits and returns every subagent's final answer; with "
        "run_in_background=true returns their ids at once (collect with task_result)."
    )
    Args = TaskArgs
    # Subagents of a read-only agent are read-only too, so plan mode may delegate.
    sandboxable = True

    def __init__(self, agents: Mapping[str, str] | None = None) -> None:
        # ``{profile name: description}``: what ``subagent_type`` may name, shown to the model.
        self.agents = dict(agents or {})

    def schema(self) -> dict[str, Any]:  # type: ignore[override]
        """The class's schema, with this instance's agent profiles in the description (an
        instance method: each agent has its own profiles; the class schema stays cached)."""
        base = super().schema()
        if not self.agents:
            return base
        out = copy.deepcopy(base)
        out["function"]["description"] = self.description + describe_agents(self.agents)
        return out

    async def run(self, args: TaskArgs, ctx: ToolContext) -> ToolResult:
        port = _port(ctx)
        if port is None:
            return ToolResult(content="Subagents are not available in this agent.", is_error=True)
        spawned = await asyncio.gather(
            *(port.spawn(i.prompt, i.subagent_type, i.description) for i in args.items()),
            return_exceptions=True,
        )
        ids = [s for s in spawned if isinstance(s, str)]
        errors = [s for s in spawned if isinstance(s, BaseException)]
        if errors:  # all or none: a half-started fan-out would be a confusing result
            if ids:
                await port.cancel(ids)
            return ToolResult(content=f"Could not start subagent: {errors[0]}", is_error=True)
        started = ctx.services.subagent_ids
        started.extend(ids)
        if args.run_in_background:
            listing = ", ".join(ids)
            return ToolResult(
                content=f"Started {len(ids)} subagent(s) in the background: {listing}. "
                "Collect their results with task_result.",
                metadata={"subagents": ids},
            )
        try:
            results = await port.wait(ids, None)
        except asyncio.CancelledError:
            await asyncio.shield(port.cancel(ids))
            raise
        failed = [i for i, r in results.items() if r.get("stop_reason") not in ("done", "goal_met")]
        return ToolResult(
            content=format_results(results),
            is_error=bool(failed) and len(failed) == len(results),
            metadata={"subagents": ids, "failed": failed},
        )


class TaskResultArgs(BaseModel):
    task_ids: list[str] = Field(min_length=1, description="Subagent ids from task.")
    wait: bool = Field(default=True, description="Wait for them to finish.")
    timeout_s: float = Field(default=600, gt=0, le=7200)


class TaskResultTool(Tool):
    name = "task_result"
    description = (
        "Get the results of subagents started with task(run_in_background=true). With "
        "wait=true (default) waits up to timeout_s for them to finish; unfinished ones are "
        "reported as running."
    )
    Args = TaskResultArgs
    read_only = True

    async def run(self, args: TaskResultArgs, ctx: ToolContext) -> ToolResult:
        port = _port(ctx)
        if port is None:
            return ToolResult(content="Subagents are not available in this agent.", is_error=True)
        known = set(ctx.services.subagent_ids)
        unknown = [i for i in args.task_ids if i not in known]
        if unknown:
            return ToolResult(
                content=f"Unknown subagent id(s): {', '.join(unknown)}", is_error=True
            )
        results = await port.wait(args.task_ids, args.timeout_s if args.wait else 0.0)
        return ToolResult(content=format_results(results))
