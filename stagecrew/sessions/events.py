"""One line of plain text for each event a person reads beside the conversation.

The live view (``crew run``, ``crew logs``: ``cli/render.py``) and the transcripts rebuilt from
a log (``crew show``, ``replay``, ``export``) say the same thing about a judge verdict, a
checkpoint, a hook or a service, so the wording has one owner: this module. It returns plain
text and a level; colour is the terminal's business.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from stagecrew.messages import (
    ActorFailed,
    Cancel,
    CandidateFinished,
    CheckpointWritten,
    ConversationRewound,
    HookRan,
    JudgeVerdict,
    Message,
    ModelRetry,
    Notice,
    PermissionReply,
    PermissionRequest,
    ServiceEvent,
    TurnFinished,
)

Level = Literal["dim", "info", "ok", "warning", "error"]

ARG_KEYS = ("command", "file_path", "pattern", "path", "url", "action", "prompt")


@dataclass(frozen=True)
class EventLine:
    """What an event says, and how loudly (``dim`` for bookkeeping, ``error`` for failures)."""

    level: Level
    text: str


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def summarise_args(tool: str, raw: str, width: int = 90) -> str:
    """A tool call's arguments as the one thing a reader wants (the command, the file, ...)."""
    try:
        args = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return raw[:width]
    if not isinstance(args, dict):
        return raw[:width]
    for key in ARG_KEYS:
        if key in args:
            text = str(args[key]).replace("\n", " ")
            return text if len(text) <= width else text[: width - 1] + "…"
    text = json.dumps(args)
    return text if len(text) <= width else text[: width - 1] + "…"


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


# Hook decisions that change nothing (``RunOutcome`` in ``hooks/outcome.py``).
_QUIET_DECISIONS = ("", "ok")


def hook_line(hook: HookRan) -> str:
    """``⚙ hook PreToolUse[Bash] `./guard.sh` → exit 2, block (12 ms)``."""
    matcher = f"[{hook.matcher}]" if hook.matcher else ""
    if hook.timed_out:
        outcome = "timed out"
    elif hook.exit_code is None:
        outcome = "did not run"
    else:
        outcome = f"exit {hook.exit_code}"
    if hook.decision not in _QUIET_DECISIONS:
        outcome += f", {hook.decision}"
    return (
        f"⚙ hook {hook.event}{matcher} `{shorten(hook.command, 60)}` → {outcome} "
        f"({hook.duration_ms:.0f} ms)"
    )


def hook_level(hook: HookRan) -> Level:
    """A hook that failed or stopped something is worth a look, one that allowed or asked is
    worth a line; one that passed without a word is bookkeeping."""
    failed = hook.timed_out or hook.exit_code is None or hook.decision == "error"
    if failed or hook.decision in ("deny", "block", "stop"):
        return "warning"
    if hook.exit_code != 0 or hook.decision not in _QUIET_DECISIONS:
        return "info"
    return "dim"


def verdict_line(verdict: JudgeVerdict) -> EventLine:
    """``⚖ judge round 2: met — tests pass`` (or not met, with what is missing)."""
    ruling = "met" if verdict.met else ("impossible" if verdict.impossible else "not met")
    text = f"⚖ judge round {verdict.round} ({verdict.source}): {ruling}"
    if verdict.reason:
        text += f" — {shorten(verdict.reason, 160)}"
    if verdict.missing:
        text += f"; missing: {shorten('; '.join(verdict.missing), 160)}"
    return EventLine("ok" if verdict.met else "warning", text)


def candidate_line(candidate: CandidateFinished) -> EventLine:
    """A Max Mode candidate's end: passed or not, its patch and its bill."""
    outcome = "passed" if candidate.passed else "did not pass"
    text = (
        f"◆ candidate {candidate.actor_id} {outcome} · patch {candidate.patch_bytes:,} B · "
        f"{candidate.usage.total_tokens:,} tokens · ${candidate.usage.cost_usd:.4f}"
    )
    return EventLine("ok" if candidate.passed else "warning", text)


def describe(body: Message) -> EventLine | None:
    """The line for an event that is neither conversation nor tool call, or None for the
    bookkeeping nobody reads in a transcript (heartbeats, state changes, usage)."""
    if isinstance(body, Notice):
        level: Level = {"info": "dim", "warning": "warning", "error": "error"}[body.level]
        return EventLine(level, f"• {body.text}")
    if isinstance(body, ModelRetry):
        return EventLine("warning", retry_line(body))
    if isinstance(body, PermissionRequest):
        return EventLine("warning", f"? permission: {body.summary} ({body.reason})")
    if isinstance(body, PermissionReply):
        return EventLine("dim", f"  answered: {body.decision}")
    if isinstance(body, HookRan):
        return EventLine(hook_level(body), hook_line(body))
    if isinstance(body, ServiceEvent):
        level = "error" if body.state == "failed" else "dim"
        level = "warning" if body.state == "restarted" else level
        detail = f": {body.detail}" if body.detail else ""
        return EventLine(level, f"⚙ service {body.service} {body.state}{detail}")
    if isinstance(body, CheckpointWritten):
        return EventLine(
            "dim", f"✎ checkpoint written ({body.reason}, {body.chars:,} chars): {body.path}"
        )
    if isinstance(body, JudgeVerdict):
        return verdict_line(body)
    if isinstance(body, CandidateFinished):
        return candidate_line(body)
    if isinstance(body, ActorFailed):
        cause = f" ({body.cause})" if body.cause else ""
        return EventLine("error", f"✗ actor {body.actor_id} failed{cause}: {body.error}")
    if isinstance(body, TurnFinished):
        error = f": {body.error}" if body.error else ""
        return EventLine("dim", f"— turn ended: {body.stop_reason.value}{error}")
    if isinstance(body, ConversationRewound):
        return EventLine(
            "warning", f"↺ conversation rewound to point {body.point} (the log at #{body.to_seq})"
        )
    if isinstance(body, Cancel):
        return EventLine("warning", f"■ cancel {body.target}: {body.reason}")
    return None
