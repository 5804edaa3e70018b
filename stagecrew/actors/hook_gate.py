"""The agent's side of Claude Code's hooks: when each event fires and what its outcome does.

``stagecrew/hooks`` runs hook commands and reads their answers; this module decides, for the
loop, what the answers mean: a PreToolUse deny is the tool's (error) result, an
``updatedInput`` replaces the arguments, a Stop hook that blocks sends the agent back to work
with the hook's reason, a refused prompt ends the run before the model sees it. Every hook
process becomes a ``HookRan`` event and every message meant for the person a ``Notice``.

Hooks run in the agent's own process (where its tools run), with the session's environment.
A hook's ``allow`` skips an ``ask``, never a ``deny`` rule: the project's deny rules hold
whatever a script says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stagecrew.actors.spec import AgentSpec, EventSink
from stagecrew.hooks import (
    NOTIFICATION,
    POST_TOOL_USE,
    PRE_COMPACT,
    HookOutcome,
    HookRunner,
    merge,
    parse_hooks,
    payload_tool_response,
)
from stagecrew.messages import ActorRole, HookRan, Notice
from stagecrew.tools.base import ToolResult

# A Stop hook may send the agent back to work this many times in a row; then it stops anyway
# (Claude Code leaves the bound to the script's own ``stop_hook_active`` check).
MAX_STOP_BLOCKS = 8


class HookStop(Exception):
    """A hook answered ``continue: false``: the run ends with the hook's reason."""


@dataclass
class ToolGate:
    """What PreToolUse decided for one call."""

    result: ToolResult | None = None  # set: the call does not run, this is its result
    arguments: dict[str, Any] | None = None  # the (possibly replaced) arguments to run with
    permission: Literal["allow", "deny", "ask"] | None = None


class AgentHooks:
    def __init__(self, spec: AgentSpec, events: EventSink) -> None:
        self.spec = spec
        self.events = events
        self.runner: HookRunner | None = None
        self.stop_blocks = 0
        if spec.hooks:
            config = merge([parse_hooks(hooks, source) for source, hooks in spec.hooks])
            if not config.is_empty:
                transcript = Path(spec.session_dir or spec.workspace) / "events.jsonl"
                self.runner = HookRunner(
                    config,
                    Path(spec.workspace),
                    session_id=spec.session,
                    transcript_path=transcript,
                    permission_mode="plan" if spec.read_only else "default",
                )

    @property
    def primary(self) -> bool:
        return self.spec.role == ActorRole.PRIMARY

    def _record(self, outcome: HookOutcome, tool: str | None = None) -> HookOutcome:
        for run in outcome.runs:
            self.events.emit(
                HookRan(
                    actor_id=self.spec.actor_id,
                    event=run.event,
                    matcher=run.matcher,
                    command=run.command,
                    exit_code=run.exit_code,
                    duration_ms=float(run.duration_ms),
                    timed_out=run.timed_out,
                    decision=run.outcome,
                    tool=tool,
                )
            )
        for line in outcome.messages_for_person:
            self.events.emit(Notice(actor_id=self.spec.actor_id, level="warning", text=line))
        if outcome.stop:
            raise HookStop(outcome.stop_reason or f"a {outcome.event} hook stopped the agent")
        return outcome

    async def on_start(self, resumed: bool, prompt: str) -> tuple[str | None, str]:
        """SessionStart and UserPromptSubmit for a primary run: (refusal, added context)."""
        if self.runner is None or not self.primary:
            return None, ""
        context: list[str] = []
        started = self._record(await self.runner.session_start("resume" if resumed else "startup"))
        if started.additional_context:
            context.append(started.additional_context)
        if prompt and not resumed:
            submitted = self._record(await self.runner.user_prompt_submit(prompt))
            if submitted.blocked:
                return submitted.reason or "refused by a UserPromptSubmit hook", ""
            if submitted.additional_context:
                context.append(submitted.additional_context)
        return None, "\n".join(context)

    async def before_tool(self, name: str, arguments: dict[str, Any]) -> ToolGate:
        if self.runner is None:
            return ToolGate(arguments=arguments)
        outcome = self._record(await self.runner.pre_tool_use(name, arguments), tool=name)
        if outcome.blocked or outcome.permission == "deny":
            why = outcome.reason or outcome.permission_reason or "no reason given"
            return ToolGate(
                result=ToolResult(
                    content=f"Blocked by a PreToolUse hook: {why}",
                    is_error=True,
                    metadata={"hook": "deny"},
                )
            )
        return ToolGate(
            arguments=outcome.updated_input if outcome.updated_input is not None else arguments,
            permission=outcome.permission,
        )

    async def after_tool(
        self, name: str, arguments: dict[str, Any], result: ToolResult
    ) -> ToolResult:
        if self.runner is None or not self.runner.has_hooks(POST_TOOL_USE, name):
            return result
        response = payload_tool_response(
            name, arguments, result.content, result.is_error, self.runner.project_root
        )
        outcome = self._record(
            await self.runner.post_tool_use(name, arguments, response), tool=name
        )
        extra = [
            t for t in (outcome.reason if outcome.blocked else "", outcome.additional_context) if t
        ]
        if not extra:
            return result
        note = "\n".join(f"[PostToolUse hook] {t}" for t in extra)
        return result.model_copy(update={"content": f"{result.content}\n\n{note}"})

    async def on_ask(self, summary: str) -> None:
        if self.runner is not None and self.runner.has_hooks(NOTIFICATION):
            self._record(
                await self.runner.notification(f"stagecrew needs your permission to use {summary}")
            )

    async def before_compact(self) -> None:
        """PreCompact, before the context is rebuilt from memory (Claude Code's automatic
        compaction). It cannot stop the rebuild; its messages reach the person."""
        if self.runner is not None and self.runner.has_hooks(PRE_COMPACT):
            self._record(await self.runner.pre_compact("auto"))

    async def on_stop(self) -> str | None:
        """Stop/SubagentStop: the reason to keep working, or None to stop."""
        if self.runner is None or self.stop_blocks >= MAX_STOP_BLOCKS:
            return None
        outcome = self._record(
            await self.runner.stop(self.stop_blocks > 0, subagent=not self.primary)
        )
        if not outcome.blocked:
            return None
        self.stop_blocks += 1
        return outcome.reason or "a Stop hook asked you to continue"

    async def on_end(self, reason: str) -> None:
        if self.runner is not None and self.primary:
            self._record(await self.runner.session_end(reason))
