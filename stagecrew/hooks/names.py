"""Tool names and tool inputs between stagecrew and Claude Code.

People's hook configs say ``"matcher": "Bash|Edit"`` and their scripts test
``tool_name == "Bash"`` and read ``tool_input.file_path``. stagecrew's tools are named
differently (``bash``, ``edit``), so a matcher may name either, and the JSON a script
receives uses Claude Code's name wherever one exists.

The argument names were chosen to be Claude Code's, so inputs are mostly passed through.
Two things do differ and are translated:

* Claude Code sends absolute file paths; stagecrew's tools take paths relative to the
  workspace as well. Relative paths are made absolute against the project root (scripts
  compare them with ``$CLAUDE_PROJECT_DIR``); stagecrew's tools accept absolute paths
  inside the workspace, so an ``updatedInput`` holding them works unchanged.
* ``grep``'s flags are ``-B``/``-A``/``-C``/``-n``/``-i`` in the schema the model sees (as in
  Claude Code) but ``before``/``after``/... as pydantic field names; a caller handing us
  ``model_dump()`` output gets them renamed back to the flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

# stagecrew tool -> the Claude Code names a matcher may use for it. The first is the name
# sent to scripts, when the tool is a faithful equivalent (apply_patch is not: its input is a
# patch, not Edit's file_path/old_string/new_string, so it keeps its own name).
CLAUDE_NAMES: Final[Mapping[str, tuple[str, ...]]] = {
    "bash": ("Bash",),
    "read": ("Read",),
    "write": ("Write",),
    "edit": ("Edit", "MultiEdit"),
    "apply_patch": ("Edit", "MultiEdit"),
    "glob": ("Glob",),
    "grep": ("Grep",),
    "ls": ("LS",),
    "webfetch": ("WebFetch",),
    "task": ("Task", "Agent"),
    "todo": ("TodoWrite",),
    "bash_output": ("BashOutput",),
    "kill_shell": ("KillShell", "KillBash"),
    "skill": ("Skill",),
}

# Tools whose payload name stays stagecrew's even though matchers may use Claude names
# (their inputs are not Claude Code's).
_NO_FAITHFUL_NAME: Final = frozenset({"apply_patch", "skill"})

# Claude Code tools stagecrew has no counterpart for: a rule or a ``tools`` list naming one is
# valid Claude Code, it just has nothing to apply to here (said once, not an error).
CLAUDE_ONLY_TOOLS: Final = frozenset(
    {"WebSearch", "NotebookEdit", "NotebookRead", "ExitPlanMode", "SlashCommand"}
)

# Fields holding a file or directory path, per stagecrew tool.
_PATH_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "read": ("file_path",),
    "write": ("file_path",),
    "edit": ("file_path",),
    "ls": ("path",),
    "glob": ("path",),
    "grep": ("path",),
}

_GREP_FLAGS: Final[Mapping[str, str]] = {
    "before": "-B",
    "after": "-A",
    "context": "-C",
    "line_numbers": "-n",
    "case_insensitive": "-i",
}


def matcher_names(tool: str) -> tuple[str, ...]:
    """Every name a matcher may use for the stagecrew tool ``tool`` (its own name first)."""
    return (tool, *CLAUDE_NAMES.get(tool, ()))


def stagecrew_tools(claude_name: str) -> tuple[str, ...]:
    """The stagecrew tools a Claude Code tool name stands for, in ``CLAUDE_NAMES`` order
    (``Edit`` is ``edit`` and ``apply_patch``); empty for a name stagecrew does not know.

    ``mcp__server`` and ``mcp__server__tool`` are the same names in both (MCP tools keep
    Claude Code's naming), so they come back as they are."""
    if claude_name.startswith("mcp__"):
        return (claude_name,)
    return tuple(tool for tool, names in CLAUDE_NAMES.items() if claude_name in names)


def payload_tool_name(tool: str) -> str:
    """The ``tool_name`` a script receives: Claude Code's name when one is faithful."""
    names = CLAUDE_NAMES.get(tool)
    if not names or tool in _NO_FAITHFUL_NAME:
        return tool
    return names[0]


def payload_tool_input(
    tool: str, tool_input: Mapping[str, Any], project_root: Path
) -> dict[str, Any]:
    """``tool_input`` with Claude Code's field names and absolute paths (a new dict)."""
    out = dict(tool_input)
    if tool == "grep":
        for field, flag in _GREP_FLAGS.items():
            if field in out and flag not in out:
                out[flag] = out.pop(field)
    for field in _PATH_FIELDS.get(tool, ()):
        value = out.get(field)
        if isinstance(value, str) and value and not value.startswith("~"):
            if not os.path.isabs(value):
                value = os.path.normpath(os.path.join(project_root, value))
            out[field] = value
    return out


def payload_tool_response(
    tool: str, tool_input: Mapping[str, Any], content: str, is_error: bool, project_root: Path
) -> dict[str, Any]:
    """A ``tool_response`` for PostToolUse built from a stagecrew ``ToolResult``.

    Claude Code's responses differ per tool; this carries the parts scripts commonly read
    (``success``, ``filePath`` for file tools, ``stdout``/``stderr`` for Bash) plus stagecrew's
    own ``content`` and ``is_error``. bash merges its streams, so ``stdout`` holds both.
    """
    out: dict[str, Any] = {"content": content, "is_error": is_error, "success": not is_error}
    if tool in ("read", "write", "edit"):
        path = payload_tool_input(tool, tool_input, project_root).get("file_path")
        if isinstance(path, str):
            out["filePath"] = path
    elif tool == "bash":
        out.update(stdout=content, stderr="", interrupted=False, isImage=False)
    return out
