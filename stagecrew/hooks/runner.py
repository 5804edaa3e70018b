"""``HookRunner``: run an event's matching hooks in parallel and combine what they said.

One runner per agent, built once: the environment and the common payload fields are fixed
then, so an event with no matching hook costs a dictionary lookup and nothing else (the
agent asks on every tool call). Hooks that match run concurrently, as in Claude Code, each
under its own timeout; their outcomes are combined in config order (``outcome.py``), so the
result does not depend on which finished first. ``run`` never raises for a hook's failure.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stagecrew.envutil import restored_env
from stagecrew.hooks.config import HookConfig, Selected, select
from stagecrew.hooks.events import (
    MATCHER_FIELD,
    NOTIFICATION,
    POST_TOOL_USE,
    PRE_COMPACT,
    PRE_TOOL_USE,
    SESSION_END,
    SESSION_START,
    STOP,
    SUBAGENT_STOP,
    TOOL_EVENTS,
    USER_PROMPT_SUBMIT,
)
from stagecrew.hooks.names import matcher_names, payload_tool_input, payload_tool_name
from stagecrew.hooks.outcome import HookOutcome, combine, interpret, make_run
from stagecrew.hooks.process import run_command


class HookRunner:
    """Runs hooks for one agent.

    ``env`` is the environment hooks start from (default: this process's, with the values
    stagecrew's runtime injected for itself undone, as for tool commands);
    ``CLAUDE_PROJECT_DIR`` and ``STAGECREW_PROJECT_DIR`` are set to the project root on top.
    ``cwd`` is what scripts receive as ``cwd`` (default the project root); hooks always run
    in the project root, as Claude Code runs them.
    """

    def __init__(
        self,
        config: HookConfig,
        project_root: Path,
        *,
        session_id: str,
        transcript_path: str | Path = "",
        permission_mode: str = "default",
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.config = config
        self.project_root = Path(os.path.abspath(project_root))
        base = (
            restored_env(os.environ)
            if env is None
            else restored_env(env, inherited_from=os.environ)
        )
        base["CLAUDE_PROJECT_DIR"] = str(self.project_root)
        base["STAGECREW_PROJECT_DIR"] = str(self.project_root)
        self.env = base
        self.common: dict[str, Any] = {
            "session_id": session_id,
            "transcript_path": str(transcript_path),
            "cwd": str(cwd if cwd is not None else self.project_root),
            "permission_mode": permission_mode,
        }

    # -- asking ----------------------------------------------------------------------------

    def _selected(
        self, event: str, payload: Mapping[str, Any], tool_name: str | None
    ) -> tuple[Selected, ...]:
        if event not in self.config.events:
            return ()
        subject: tuple[str, ...] | None = None
        if event in TOOL_EVENTS and tool_name is not None:
            subject = matcher_names(tool_name)
        elif event in MATCHER_FIELD and isinstance(payload.get(MATCHER_FIELD[event]), str):
            subject = (payload[MATCHER_FIELD[event]],)
        return select(self.config, event, subject)

    def has_hooks(self, event: str, tool_name: str | None = None, **fields: Any) -> bool:
        """Whether ``run`` would start anything: lets a caller skip building a costly payload
        (a large ``tool_response``). ``fields`` carry a matcher subject such as ``source``."""
        return bool(self._selected(event, fields, tool_name))

    # -- running ---------------------------------------------------------------------------

    def payload(
        self, event: str, fields: Mapping[str, Any], tool_name: str | None = None
    ) -> dict[str, Any]:
        """The JSON object a hook receives on stdin, as Claude Code sends it."""
        data = {**self.common, **fields, "hook_event_name": event}
        if tool_name is not None:
            data["tool_name"] = payload_tool_name(tool_name)
            tool_input = fields.get("tool_input")
            if isinstance(tool_input, Mapping):
                data["tool_input"] = payload_tool_input(tool_name, tool_input, self.project_root)
        return data

    async def run(
        self, event: str, payload: Mapping[str, Any] | None = None, tool_name: str | None = None
    ) -> HookOutcome:
        """Run ``event``'s matching hooks with ``payload`` (the per-event fields, see
        ``events.py``; stagecrew's tool name and its own argument names for tool events) and
        return the combined outcome. No matching hook: an empty outcome at once."""
        fields = payload or {}
        selected = self._selected(event, fields, tool_name)
        if not selected:
            return HookOutcome(event)
        stdin = json.dumps(self.payload(event, fields, tool_name), default=str).encode()
        results = await asyncio.gather(
            *(
                run_command(
                    s.hook.command,
                    stdin,
                    cwd=self.project_root,
                    env=self.env,
                    timeout_s=s.hook.timeout_s,
                )
                for s in selected
            )
        )
        effects = [interpret(event, s.hook, r) for s, r in zip(selected, results, strict=True)]
        runs = [
            make_run(event, s.matcher, s.hook, r, e)
            for s, r, e in zip(selected, results, effects, strict=True)
        ]
        return combine(event, effects, runs)

    # -- one method per event, naming its fields -------------------------------------------

    async def session_start(self, source: str = "startup") -> HookOutcome:
        return await self.run(SESSION_START, {"source": source})

    async def user_prompt_submit(self, prompt: str) -> HookOutcome:
        return await self.run(USER_PROMPT_SUBMIT, {"prompt": prompt})

    async def pre_tool_use(
        self, tool_name: str, tool_input: Mapping[str, Any], tool_use_id: str | None = None
    ) -> HookOutcome:
        fields: dict[str, Any] = {"tool_input": tool_input}
        if tool_use_id is not None:
            fields["tool_use_id"] = tool_use_id
        return await self.run(PRE_TOOL_USE, fields, tool_name)

    async def post_tool_use(
        self,
        tool_name: str,
        tool_input: Mapping[str, Any],
        tool_response: Any,
        tool_use_id: str | None = None,
    ) -> HookOutcome:
        fields: dict[str, Any] = {"tool_input": tool_input, "tool_response": tool_response}
        if tool_use_id is not None:
            fields["tool_use_id"] = tool_use_id
        return await self.run(POST_TOOL_USE, fields, tool_name)

    async def notification(
        self, message: str, notification_type: str = "permission_prompt"
    ) -> HookOutcome:
        return await self.run(
            NOTIFICATION, {"message": message, "notification_type": notification_type}
        )

    async def stop(self, stop_hook_active: bool, *, subagent: bool = False) -> HookOutcome:
        event = SUBAGENT_STOP if subagent else STOP
        return await self.run(event, {"stop_hook_active": stop_hook_active})

    async def pre_compact(
        self, trigger: str = "auto", custom_instructions: str = ""
    ) -> HookOutcome:
        return await self.run(
            PRE_COMPACT, {"trigger": trigger, "custom_instructions": custom_instructions}
        )

    async def session_end(self, reason: str = "other") -> HookOutcome:
        return await self.run(SESSION_END, {"reason": reason})
