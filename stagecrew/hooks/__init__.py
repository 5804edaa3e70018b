"""Claude Code's hooks contract, so people's existing hook scripts work under stagecrew.

The public surface:

* ``load_hooks(project_root, *, home, user_hooks, project_hooks) -> HookConfig``: every
  source merged (``config.py``); raises ``stagecrew.config.ConfigError``.
* ``HookRunner(config, project_root, *, session_id, transcript_path, permission_mode, env)``
  with ``await run(event, payload, tool_name) -> HookOutcome`` and one method per event
  (``pre_tool_use``, ``post_tool_use``, ``user_prompt_submit``, ``stop``, ...).
* ``HookOutcome`` (what the caller must do) and ``HookRun`` (one record per hook process).

Hooks run for real (``bash -c``, JSON on stdin) and never raise into the caller: a hook's
failure is part of the outcome.
"""

from stagecrew.hooks.config import (
    DEFAULT_TIMEOUT_S,
    HookCommand,
    HookConfig,
    HookSource,
    Matcher,
    MatcherGroup,
    hook_sources,
    load_hooks,
    merge,
    parse_hooks,
)
from stagecrew.hooks.events import (
    BLOCKING_EVENTS,
    EVENTS,
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
from stagecrew.hooks.names import (
    CLAUDE_NAMES,
    matcher_names,
    payload_tool_input,
    payload_tool_name,
    payload_tool_response,
)
from stagecrew.hooks.outcome import HookOutcome, HookRun, Permission, RunOutcome
from stagecrew.hooks.runner import HookRunner

__all__ = [
    "BLOCKING_EVENTS",
    "CLAUDE_NAMES",
    "DEFAULT_TIMEOUT_S",
    "EVENTS",
    "NOTIFICATION",
    "POST_TOOL_USE",
    "PRE_COMPACT",
    "PRE_TOOL_USE",
    "SESSION_END",
    "SESSION_START",
    "STOP",
    "SUBAGENT_STOP",
    "TOOL_EVENTS",
    "USER_PROMPT_SUBMIT",
    "HookCommand",
    "HookConfig",
    "HookOutcome",
    "HookRun",
    "HookRunner",
    "HookSource",
    "Matcher",
    "MatcherGroup",
    "Permission",
    "RunOutcome",
    "hook_sources",
    "load_hooks",
    "matcher_names",
    "merge",
    "parse_hooks",
    "payload_tool_input",
    "payload_tool_name",
    "payload_tool_response",
]
