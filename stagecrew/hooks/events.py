"""The hook events, as Claude Code names them, and what each one can do.

Hook scripts written for Claude Code test ``hook_event_name`` and read per-event fields from
stdin, so the names and fields here are Claude Code's, not stagecrew's. Each event differs
in two ways that the runner must know about:

* **what its matcher is matched against.** For tool events it is the tool name; for a few
  others Claude Code matches a field of the payload (``SessionStart`` matchers such as
  ``startup|resume`` are common in real configs). Events without a subject ignore matchers.
* **whether it can block.** Exit 2 (or ``decision: "block"``) stops a tool call, refuses a
  prompt, or keeps a stopping agent going; on the other events there is nothing to stop, so
  Claude Code only shows stderr to the person, and so do we.

Payload fields per event (besides ``session_id``, ``transcript_path``, ``cwd``,
``permission_mode`` and ``hook_event_name``, which every event gets):

=================  =========================================================================
SessionStart       ``source``: startup | resume | clear | compact
UserPromptSubmit   ``prompt``
PreToolUse         ``tool_name``, ``tool_input`` (``tool_use_id`` when known)
PostToolUse        ``tool_name``, ``tool_input``, ``tool_response`` (``tool_use_id``)
Notification       ``message`` (``notification_type``: permission_prompt, idle_prompt, ...)
Stop               ``stop_hook_active``
SubagentStop       ``stop_hook_active``
PreCompact         ``trigger``: manual | auto; ``custom_instructions``
SessionEnd         ``reason``: clear | logout | prompt_input_exit | other
=================  =========================================================================
"""

from __future__ import annotations

from typing import Final

SESSION_START: Final = "SessionStart"
USER_PROMPT_SUBMIT: Final = "UserPromptSubmit"
PRE_TOOL_USE: Final = "PreToolUse"
POST_TOOL_USE: Final = "PostToolUse"
NOTIFICATION: Final = "Notification"
STOP: Final = "Stop"
SUBAGENT_STOP: Final = "SubagentStop"
PRE_COMPACT: Final = "PreCompact"
SESSION_END: Final = "SessionEnd"

EVENTS: Final = (
    SESSION_START,
    USER_PROMPT_SUBMIT,
    PRE_TOOL_USE,
    POST_TOOL_USE,
    NOTIFICATION,
    STOP,
    SUBAGENT_STOP,
    PRE_COMPACT,
    SESSION_END,
)

TOOL_EVENTS: Final = frozenset({PRE_TOOL_USE, POST_TOOL_USE})

# Events whose hooks can stop what is happening (exit 2, decision "block", on_failure block).
BLOCKING_EVENTS: Final = frozenset(
    {PRE_TOOL_USE, POST_TOOL_USE, USER_PROMPT_SUBMIT, STOP, SUBAGENT_STOP}
)

# Events whose plain stdout (exit 0, not JSON) Claude Code adds to the model's context.
STDOUT_AS_CONTEXT: Final = frozenset({USER_PROMPT_SUBMIT, SESSION_START})

# The payload field a non-tool event's matcher is matched against.
MATCHER_FIELD: Final = {
    SESSION_START: "source",
    PRE_COMPACT: "trigger",
    NOTIFICATION: "notification_type",
    SESSION_END: "reason",
}

# Events Claude Code has and stagecrew does not send (yet): their hooks are accepted in a
# settings file, so a valid Claude Code config loads, but they never run.
CLAUDE_ONLY_EVENTS: Final = frozenset(
    {
        "PermissionRequest",
        "PermissionDenied",
        "PostToolUseFailure",
        "SubagentStart",
        "PostCompact",
        "Setup",
    }
)
