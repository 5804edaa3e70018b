"""A person's Claude Code setup, read as it is: what stagecrew can use of ``.claude/``.

Each module reads one kind of thing and translates it into stagecrew's own terms, keeping
where each item came from and saying, one line per item, what it could not use:

* ``settings``: the three settings files (``~/.claude/settings.json``,
  ``.claude/settings.json``, ``.claude/settings.local.json``) and the one reader of them (hooks
  read the same files);
* ``permissions``: ``permissions.allow/ask/deny`` as rule strings of stagecrew's policy engine,
  ``load_claude_permissions(project_root, home=...) -> ClaudePermissions``;
* ``agents``: ``.claude/agents/*.md`` subagents as the fields of agent profiles,
  ``load_claude_agents(directory, scope) -> ClaudeAgents`` (``stagecrew.profiles`` puts them
  next to stagecrew's own profiles).

Nothing here runs anything: reading a setup never starts a hook, a command or a server.
"""

from stagecrew.claude.agents import (
    MODEL_ROLES,
    ClaudeAgent,
    ClaudeAgents,
    claude_agent_dirs,
    load_claude_agents,
    parse_claude_agent,
)
from stagecrew.claude.permissions import (
    ClaudePermissions,
    ClaudeRule,
    load_claude_permissions,
    translate_permissions,
)
from stagecrew.claude.settings import SettingsFile, default_home, read_settings, settings_files

__all__ = [
    "MODEL_ROLES",
    "ClaudeAgent",
    "ClaudeAgents",
    "ClaudePermissions",
    "ClaudeRule",
    "SettingsFile",
    "claude_agent_dirs",
    "default_home",
    "load_claude_agents",
    "load_claude_permissions",
    "parse_claude_agent",
    "read_settings",
    "settings_files",
    "translate_permissions",
]
