"""What hooks decided: one ``HookRun`` per process, one ``HookOutcome`` per event.

Claude Code's contract, per hook (the event decides what "block" means, see ``events.py``):

* exit 0: go on. Plain stdout becomes context for ``UserPromptSubmit`` and ``SessionStart``
  (elsewhere Claude Code only shows it in its transcript view; here it is in the record).
  JSON stdout is honoured: ``continue: false`` + ``stopReason``; ``decision: "block"`` +
  ``reason``; ``hookSpecificOutput.permissionDecision`` (allow/deny/ask) +
  ``permissionDecisionReason``; ``hookSpecificOutput.updatedInput``;
  ``hookSpecificOutput.additionalContext``; ``systemMessage``; ``suppressOutput``; and the
  older ``decision: "approve"/"block"`` of ``PreToolUse`` (meaning allow/deny).
* exit 2: block, with stderr as the reason (stdout, JSON or not, is ignored). On events that
  cannot block, stderr is only shown to the person.
* anything else: a non-blocking error, stderr shown to the person. With
  ``"on_failure": "block"`` (stagecrew's addition) such a failure, a hook that could not be
  started and a hook that timed out block instead, so a guard that crashes fails closed.

Several hooks' results combine deterministically, whatever order they finished in: any
block blocks (reasons joined in config order); deny beats ask beats allow; contexts are
joined in config order; the last ``updatedInput`` in config order wins; any
``continue: false`` stops.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from stagecrew.hooks.config import HookCommand
from stagecrew.hooks.events import BLOCKING_EVENTS, PRE_TOOL_USE, STDOUT_AS_CONTEXT
from stagecrew.hooks.process import ProcessResult

Permission = Literal["allow", "deny", "ask"]
# What one run amounted to, for the record: "error" is a failure that did not block.
RunOutcome = Literal["ok", "allow", "ask", "deny", "block", "stop", "error"]

_PERMISSION_RANK: dict[str, int] = {"allow": 0, "ask": 1, "deny": 2}
_SHOWN_COMMAND = 80


@dataclass(frozen=True)
class HookRun:
    """One hook process, as the caller logs it."""

    event: str
    matcher: str
    command: str
    exit_code: int | None  # None: never started, or killed at its timeout
    duration_ms: int
    outcome: RunOutcome
    timed_out: bool = False
    error: str = ""  # why it failed to start, or what was done to it
    origin: str = ""  # "<file>: hooks.PreToolUse[0].hooks[1]"
    stdout: str = ""
    stderr: str = ""
    suppress_output: bool = False  # the hook asked for its stdout not to be shown

    def record(self) -> dict[str, Any]:
        """The fields for an event log (output left out: it may be large or private)."""
        return {
            "event": self.event,
            "matcher": self.matcher,
            "command": self.command,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "timed_out": self.timed_out,
            "error": self.error,
            "origin": self.origin,
        }


@dataclass(frozen=True)
class HookOutcome:
    """What the caller must do after an event's hooks ran. ``blocked`` means, per event:

    * PreToolUse: the call does not run; ``reason`` goes to the model as the tool's result.
    * PostToolUse: ``reason`` goes to the model (the tool already ran).
    * UserPromptSubmit: the prompt is refused; ``reason`` is shown to the person only.
    * Stop / SubagentStop: the agent must not stop; ``reason`` tells it how to go on.

    ``stop`` (``continue: false``) overrides everything: the agent ends its turn (the tool
    does not run, the prompt is not processed) and ``stop_reason`` is shown to the person.
    """

    event: str
    blocked: bool = False
    reason: str = ""
    permission: Permission | None = None
    permission_reason: str = ""  # ask: shown in the prompt; allow: for the person/log
    updated_input: dict[str, Any] | None = None  # PreToolUse: run the tool with this instead
    additional_context: str = ""  # for the model
    stop: bool = False
    stop_reason: str = ""
    messages_for_person: tuple[str, ...] = ()
    runs: tuple[HookRun, ...] = ()

    @property
    def ran(self) -> bool:
        return bool(self.runs)


@dataclass
class _Effect:
    """One run's contribution, before combining."""

    outcome: RunOutcome = "ok"
    blocked: bool = False
    reason: str = ""
    permission: Permission | None = None
    permission_reason: str = ""
    updated_input: dict[str, Any] | None = None
    context: str = ""
    stop: bool = False
    stop_reason: str = ""
    messages: list[str] = field(default_factory=list)
    suppress_output: bool = False


def _short(command: str) -> str:
    line = " ".join(command.split())
    return line if len(line) <= _SHOWN_COMMAND else line[: _SHOWN_COMMAND - 1] + "…"


def _failure(event: str, hook: HookCommand, result: ProcessResult) -> _Effect:
    """A hook that crashed, could not start, or timed out."""
    if result.exit_code is not None:
        what = f"failed with exit code {result.exit_code}"
    else:
        what = result.error or "failed"
    detail = result.stderr.strip()
    text = f"{event} hook `{_short(hook.command)}` {what}" + (f": {detail}" if detail else "")
    if hook.on_failure == "block" and event in BLOCKING_EVENTS:
        effect = _Effect("block", blocked=True, reason=text + " (on_failure: block)")
        if event == PRE_TOOL_USE:
            effect.permission = "deny"
        return effect
    return _Effect("error", messages=[text])


def _blocking_exit(event: str, hook: HookCommand, stderr: str) -> _Effect:
    """Exit code 2: stderr is the reason."""
    reason = stderr.strip() or f"blocked by the {event} hook `{_short(hook.command)}`"
    if event not in BLOCKING_EVENTS:
        return _Effect("error", messages=[f"{event} hook `{_short(hook.command)}`: {reason}"])
    effect = _Effect("block", blocked=True, reason=reason)
    if event == PRE_TOOL_USE:
        effect.permission = "deny"
    return effect


def _as_json(stdout: str) -> dict[str, Any] | None:
    text = stdout.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


def _from_json(event: str, hook: HookCommand, data: dict[str, Any]) -> _Effect:
    effect = _Effect(suppress_output=data.get("suppressOutput") is True)
    name = f"{event} hook `{_short(hook.command)}`"
    if isinstance(data.get("systemMessage"), str) and data["systemMessage"]:
        effect.messages.append(data["systemMessage"])
    specific = data.get("hookSpecificOutput")
    specific = specific if isinstance(specific, dict) else {}
    context = specific.get("additionalContext")
    if isinstance(context, str):
        effect.context = context

    decision = data.get("decision")
    reason = _text(data.get("reason"))
    if event == PRE_TOOL_USE:
        permission = specific.get("permissionDecision")
        permission_reason = _text(specific.get("permissionDecisionReason"))
        if permission is None and decision in ("approve", "block"):  # the older form
            permission = "allow" if decision == "approve" else "deny"
            permission_reason = reason
        if permission in _PERMISSION_RANK:
            effect.permission = permission
            effect.permission_reason = permission_reason
            effect.outcome = permission
            if permission == "deny":
                effect.blocked = True
                effect.reason = permission_reason or f"denied by the {name}"
        elif permission is not None:
            effect.messages.append(
                f"{name}: ignored permissionDecision {permission!r} (expected allow, deny or ask)"
            )
        updated = specific.get("updatedInput")
        if isinstance(updated, dict):
            effect.updated_input = updated
        elif updated is not None:
            effect.messages.append(f"{name}: ignored updatedInput (expected an object)")
    elif decision == "block" and event in BLOCKING_EVENTS:
        effect.outcome = "block"
        effect.blocked = True
        effect.reason = reason or f"blocked by the {name}"

    if data.get("continue") is False:
        effect.outcome = "stop"
        effect.stop = True
        effect.stop_reason = _text(data.get("stopReason")) or f"stopped by the {name}"
    return effect


def interpret(event: str, hook: HookCommand, result: ProcessResult) -> _Effect:
    """One hook's result under Claude Code's rules (module docstring)."""
    if result.exit_code == 0:
        data = _as_json(result.stdout)
        if data is not None:
            return _from_json(event, hook, data)
        if event in STDOUT_AS_CONTEXT:
            return _Effect(context=result.stdout.strip())
        return _Effect()
    if result.exit_code == 2:
        return _blocking_exit(event, hook, result.stderr)
    return _failure(event, hook, result)


def make_run(
    event: str, matcher: str, hook: HookCommand, result: ProcessResult, effect: _Effect
) -> HookRun:
    return HookRun(
        event=event,
        matcher=matcher,
        command=hook.command,
        exit_code=result.exit_code,
        duration_ms=result.duration_ms,
        outcome=effect.outcome,
        timed_out=result.timed_out,
        error=result.error,
        origin=hook.origin,
        stdout=result.stdout,
        stderr=result.stderr,
        suppress_output=effect.suppress_output,
    )


def combine(event: str, effects: Sequence[_Effect], runs: Sequence[HookRun]) -> HookOutcome:
    """All runs of one event as one outcome; ``effects`` and ``runs`` in config order."""
    blocked = [e for e in effects if e.blocked]
    ranked = [e for e in effects if e.permission is not None]
    permission: Permission | None = None
    permission_reason = ""
    if ranked:
        top = max(_PERMISSION_RANK[e.permission or "allow"] for e in ranked)
        winners = [e for e in ranked if _PERMISSION_RANK[e.permission or "allow"] == top]
        permission = winners[0].permission
        permission_reason = "\n".join(e.permission_reason for e in winners if e.permission_reason)
    updated = [e.updated_input for e in effects if e.updated_input is not None]
    stops = [e for e in effects if e.stop]
    return HookOutcome(
        event=event,
        blocked=bool(blocked),
        reason="\n".join(e.reason for e in blocked if e.reason),
        permission=permission,
        permission_reason=permission_reason,
        updated_input=updated[-1] if updated else None,
        additional_context="\n".join(e.context for e in effects if e.context),
        stop=bool(stops),
        stop_reason="\n".join(e.stop_reason for e in stops if e.stop_reason),
        messages_for_person=tuple(m for e in effects for m in e.messages),
        runs=tuple(runs),
    )
