"""Claude Code's permission rules (``permissions.allow/ask/deny``) as stagecrew rules.

People already keep their guard rails in ``~/.claude/settings.json`` and the project's
``.claude/settings.json`` / ``.claude/settings.local.json``; a session reads them live. Each
rule becomes one rule string of stagecrew's single policy engine (``stagecrew.tools.permissions``)
in Claude Code's syntax with its file named, ``deny Read(./.env) from .claude/settings.json``:
that string is what an agent's spec carries, what the engine matches with Claude Code's
meaning, and the line shown when the rule decides.

The files are Claude Code's, so stagecrew is lenient with what is in them: a rule stagecrew
cannot use (an unknown tool, a tool stagecrew does not have, a malformed entry) is one notice
naming the file and the rule, and the other rules still load. Keys Claude Code has and
stagecrew does not use (``defaultMode``, ``additionalDirectories``) are listed as ignored.
Only a file that is not JSON at all stops the session (``ConfigError``, as for hooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stagecrew.claude.settings import SettingsFile, read_settings, settings_files
from stagecrew.tools.permissions import RuleError, parse_rule

__all__ = ["ClaudePermissions", "ClaudeRule", "load_claude_permissions", "translate_permissions"]

Action = Literal["allow", "ask", "deny"]
_ACTIONS: tuple[Action, ...] = ("deny", "ask", "allow")  # Claude Code's order of evaluation
_RULE_KEYS = frozenset(_ACTIONS)


@dataclass(frozen=True)
class ClaudeRule:
    """One rule as written in a settings file, and where."""

    action: Action
    rule: str  # ``Read(./.env)``, as Claude Code's file has it
    source: str  # ``.claude/settings.json``: the label explanations print
    path: Path  # the file itself

    def __str__(self) -> str:
        """The rule string stagecrew's engine takes: ``deny Read(./.env) from .claude/...``."""
        return f"{self.action} {self.rule} from {self.source}"


@dataclass(frozen=True)
class ClaudePermissions:
    """Every usable rule of a project's Claude Code settings, and what could not be used."""

    rules: tuple[ClaudeRule, ...] = ()
    # One line per problem, naming the file and the rule; the rule is not loaded.
    notices: tuple[str, ...] = ()
    # ``(file, key)`` of settings keys Claude Code reads and stagecrew does not.
    ignored: tuple[tuple[Path, str], ...] = ()

    def rule_strings(self) -> list[str]:
        """The rules as an agent spec carries them (``AgentSpec.permissions``)."""
        return [str(rule) for rule in self.rules]

    def by_action(self) -> dict[Action, list[ClaudeRule]]:
        """The rules grouped deny, ask, allow (Claude Code's order), for summaries."""
        return {action: [r for r in self.rules if r.action == action] for action in _ACTIONS}


def translate_permissions(value: Any, settings: SettingsFile) -> ClaudePermissions:
    """One file's ``permissions`` value as rules and notices (nothing raises: the file is
    Claude Code's, and one odd entry must not cost the person the rest of their rules)."""
    where = settings.path
    if not isinstance(value, dict):
        kind = type(value).__name__
        return ClaudePermissions(
            notices=(f"{where}: 'permissions' should be an object, got {kind}; ignored",)
        )
    rules: list[ClaudeRule] = []
    notices: list[str] = []
    ignored = tuple((where, f"permissions.{key}") for key in value if key not in _RULE_KEYS)
    for action in _ACTIONS:
        entries = value.get(action, [])
        if not isinstance(entries, list):
            notices.append(
                f"{where}: 'permissions.{action}' should be a list of rules, got "
                f"{type(entries).__name__}; ignored"
            )
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, str) or not entry.strip():
                notices.append(
                    f"{where}: 'permissions.{action}[{i}]' should be a rule such as "
                    f"'Bash(npm run test:*)', got {entry!r}; ignored"
                )
                continue
            rule = ClaudeRule(action, entry.strip(), settings.label, where)
            try:
                parse_rule(str(rule))
            except RuleError as exc:
                notices.append(f"{where}: 'permissions.{action}[{i}]': {exc}; ignored")
                continue
            rules.append(rule)
    return ClaudePermissions(tuple(rules), tuple(notices), ignored)


def load_claude_permissions(project_root: Path, *, home: Path | None = None) -> ClaudePermissions:
    """Every Claude Code permission rule of a session in ``project_root``: the person's
    ``~/.claude/settings.json``, then the project's ``.claude/settings.json`` and
    ``.claude/settings.local.json`` (their order does not change a decision: among Claude Code's
    rules deny beats ask beats allow wherever they come from). ``home`` defaults to ``~``.
    Raises ``ConfigError`` only for a file that is there but is not a JSON object."""
    parts: list[ClaudePermissions] = []
    for settings in settings_files(project_root, home):
        data = read_settings(settings.path)
        if data and "permissions" in data:
            parts.append(translate_permissions(data["permissions"], settings))
    return ClaudePermissions(
        tuple(r for p in parts for r in p.rules),
        tuple(n for p in parts for n in p.notices),
        tuple(i for p in parts for i in p.ignored),
    )
