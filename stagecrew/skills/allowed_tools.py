"""``allowed-tools`` of skills and custom commands: Claude Code's tool list, as allow rules.

Claude Code writes the field as one string (``Bash(git diff *), Read``) or a YAML list. The
string is split at commas and blanks *outside* parentheses, because a rule's specifier holds
both (``Bash(git diff *)`` is one entry, not three). Each entry becomes a stagecrew rule
(``allow bash(git diff *)``): Claude's tool names map to stagecrew's, ``Bash(cmd:*)`` (the
legacy prefix form) becomes ``bash(cmd *)``, ``WebFetch(domain:x)`` becomes ``webfetch(x)``.

A pre-approval lifts the shipped ``ask`` defaults for the run, never a rule the person wrote:
the caller puts these rules before the config's and the profile's (last match wins), so a
``deny`` or ``ask`` in the person's settings still holds, as it does in Claude Code.
"""

from __future__ import annotations

from typing import Any

from stagecrew.tools.permissions import RuleError, parse_rule

__all__ = ["AllowedToolsError", "allow_rules", "split_tool_list"]

# Claude Code's tool names -> stagecrew's; a name not listed is lowercased (stagecrew's own
# names, ``mcp__server__tool``).
_CLAUDE_TOOLS: dict[str, str] = {
    "bash": "bash",
    "read": "read",
    "write": "write",
    "edit": "edit",
    "multiedit": "edit",
    "notebookedit": "edit",
    "notebookread": "read",
    "glob": "glob",
    "grep": "grep",
    "ls": "ls",
    "webfetch": "webfetch",
    "task": "task",
    "agent": "task",
    "todowrite": "todo",
    "todoread": "todo",
    "skill": "skill",
    "bashoutput": "bash_output",
    "killshell": "kill_shell",
    "killbash": "kill_shell",
}


class AllowedToolsError(ValueError):
    """An ``allowed-tools`` value that cannot be read; the message says which entry."""


def split_tool_list(value: Any) -> list[str]:
    """The entries of an ``allowed-tools`` (or ``tools``) value: a string split at commas and
    blanks outside parentheses, or a YAML list of strings (each entry split the same way)."""
    if value is None:
        return []
    if isinstance(value, str):
        return _split(value)
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise AllowedToolsError(f"entries must be text, got {item!r}")
            out.extend(_split(item))
        return out
    raise AllowedToolsError(
        f"must be text such as 'Bash(git diff *), Read' or a list, got {value!r}"
    )


def _split(text: str) -> list[str]:
    entries: list[str] = []
    depth, current = 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if depth == 0 and (ch == "," or ch.isspace()):
            if current:
                entries.append("".join(current))
            current = []
            continue
        current.append(ch)
    if depth:
        raise AllowedToolsError(f"unbalanced parenthesis in {text.strip()!r}")
    if current:
        entries.append("".join(current))
    return entries


def allow_rules(entries: list[str]) -> list[str]:
    """``allow`` rules for the entries; ``AllowedToolsError`` names an entry that is not a
    tool or ``Tool(specifier)``."""
    rules: list[str] = []
    for entry in entries:
        tool, paren, rest = entry.partition("(")
        if paren and not rest.endswith(")"):
            raise AllowedToolsError(f"entry {entry!r} opens '(' but does not end with ')'")
        name = _CLAUDE_TOOLS.get(tool.strip().lower(), tool.strip().lower())
        pattern = _pattern(name, rest[:-1].strip()) if paren else None
        text = f"allow {name}" if pattern is None else f"allow {name}({pattern})"
        try:
            parse_rule(text)
        except RuleError as exc:
            raise AllowedToolsError(f"entry {entry!r}: {exc}") from None
        rules.append(text)
    return rules


def _pattern(tool: str, spec: str) -> str | None:
    if spec in ("", "*"):
        return None
    if tool == "bash" and spec.endswith(":*"):
        return spec[:-2].rstrip() + " *"  # Claude's legacy prefix match: `git add:*`
    if tool == "webfetch" and spec.startswith("domain:"):
        return spec.removeprefix("domain:")
    if tool in ("read", "write", "edit", "glob", "grep", "ls"):
        if spec.startswith("//"):
            return spec[1:]  # Claude's absolute path
        if spec.startswith("/"):
            return spec[1:]  # Claude's project-root-relative path
    return spec
