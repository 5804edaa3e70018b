"""The default tool set, and the schemas the model is shown.

One instance per tool name; tools hold no per-agent state (that lives in ``ToolContext``), so
the same instances can serve every agent in a process.
"""

from __future__ import annotations

from typing import Any

from stagecrew.tools.base import Tool
from stagecrew.tools.files import ApplyPatch, Edit, Glob, Ls, Read, Write
from stagecrew.tools.git_tool import Git
from stagecrew.tools.memory_tools import MemoryTool, TasksTool
from stagecrew.tools.search import Grep
from stagecrew.tools.shell import Bash, BashOutput, KillShell
from stagecrew.tools.task import Task, TaskResultTool
from stagecrew.tools.todo import Todo
from stagecrew.tools.web import WebFetch

_DEFAULT_CLASSES: tuple[type[Tool], ...] = (
    Read,
    Write,
    Edit,
    ApplyPatch,
    Ls,
    Glob,
    Grep,
    Bash,
    BashOutput,
    KillShell,
    Git,
    WebFetch,
    Todo,
    MemoryTool,
    TasksTool,
    Task,
    TaskResultTool,
)


def default_tools() -> dict[str, Tool]:
    """Every built-in tool, name -> instance (a fresh dict each call, safe to trim)."""
    return {cls.name: cls() for cls in _DEFAULT_CLASSES}


def tool_schemas(tools: dict[str, Tool]) -> list[dict[str, Any]]:
    """OpenAI function-calling schemas, in the dict's order."""
    return [tool.schema() for tool in tools.values()]


def plan_mode_tools(tools: dict[str, Tool]) -> dict[str, Tool]:
    """The tools worth offering in read-only (plan) mode: read-only ones and those that police
    themselves there (bash through the sandbox, git's read actions)."""
    return {name: t for name, t in tools.items() if t.read_only or t.sandboxable}
