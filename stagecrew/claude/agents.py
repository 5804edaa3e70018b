"""Claude Code's subagents (``.claude/agents/*.md``) read as stagecrew agent profiles.

A Claude Code subagent is a markdown file whose front matter says ``name``, ``description``,
``tools`` (a comma-separated list of Claude Code tool names; absent means every tool) and
``model`` (``opus``/``sonnet``/``haiku``/``inherit`` or a full model id), and whose body is the
system prompt. This module translates one into the fields of a stagecrew ``AgentProfile``
(``stagecrew.profiles`` builds the profile and decides precedence; it imports this module,
never the other way round):

* tools: each Claude Code name becomes the stagecrew tools it stands for
  (``stagecrew.hooks.names``: ``Edit`` is ``edit`` and ``apply_patch``); ``mcp__server`` and
  ``mcp__server__tool`` stay as they are;
* model: Claude Code's aliases name tiers, stagecrew's config names roles, so ``opus`` (the
  strongest) runs on the ``primary`` model, ``sonnet`` on the ``subagent`` model and ``haiku``
  (the fast, cheap one) on the ``checkpoint`` model; unset roles use the primary model, so with
  one configured model all three are that model. A full id (``claude-sonnet-4-5-20250929``)
  goes by its tier; a litellm string (``openai/gpt-4.1``) is used as it is. ``inherit`` and no
  ``model`` at all (Claude Code's default) mean the parent's model. The alias is kept as
  ``source_model``;
* ``disallowedTools`` become deny rules, ``maxTurns`` the step limit, ``permissionMode: plan``
  read-only.

The files are Claude Code's, so nothing in one stops a session: a file that cannot be used
(broken front matter, no description, an empty body) is skipped with one notice naming it,
and what stagecrew cannot honour in a usable file (an unknown tool or model alias) is one
notice too, the agent still loading (an unknown model runs on the parent's model).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from stagecrew.claude.settings import default_home
from stagecrew.frontmatter import FrontmatterError, split_frontmatter
from stagecrew.hooks.names import CLAUDE_ONLY_TOOLS, stagecrew_tools

__all__ = [
    "MODEL_ROLES",
    "ClaudeAgent",
    "ClaudeAgents",
    "claude_agent_dirs",
    "load_claude_agents",
    "parse_claude_agent",
]

Scope = Literal["project", "user"]

# Claude Code's model tiers -> the stagecrew model role that plays the part.
MODEL_ROLES: Final = {"opus": "primary", "sonnet": "subagent", "haiku": "checkpoint"}
INHERIT: Final = "inherit"

# Front matter Claude Code has and stagecrew has no use for; read without a word.
_QUIET_FIELDS: Final = frozenset({"color"})
_KNOWN_FIELDS: Final = frozenset(
    {"name", "description", "tools", "disallowedTools", "model", "permissionMode", "maxTurns"}
    | {"disabled"}
)
_FAMILY_RE = re.compile(r"(opus|sonnet|haiku)")


@dataclass(frozen=True)
class ClaudeAgent:
    """One Claude Code subagent, translated; ``profile_fields()`` builds an ``AgentProfile``."""

    name: str
    description: str
    system_prompt: str
    source: Path
    scope: Scope
    # stagecrew tool names, or "*" for every tool (Claude Code's default).
    tools: list[str] | Literal["*"] = "*"
    role: str | None = None  # the model role the alias maps to
    model: str | None = None  # a litellm model string, when the file named one
    source_model: str | None = None  # ``model`` as the file has it
    permissions: list[str] = field(default_factory=list)
    max_steps: int | None = None
    read_only: bool = False

    def profile_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``AgentProfile``."""
        return {
            "name": self.name,
            "description": self.description,
            "system_prompt": self.system_prompt,
            "source": self.source,
            "tools": self.tools,
            "role": self.role,
            "model": self.model,
            "source_model": self.source_model,
            "source_format": "claude",
            "permissions": list(self.permissions),
            "max_steps": self.max_steps,
            "read_only": self.read_only,
        }


@dataclass(frozen=True)
class ClaudeAgents:
    """The usable agents of a directory, in file order, and one line per problem."""

    agents: tuple[ClaudeAgent, ...] = ()
    notices: tuple[str, ...] = ()


def claude_agent_dirs(project_root: Path, home: Path | None = None) -> dict[Scope, Path]:
    """Where Claude Code keeps subagents: the project's ``.claude/agents`` and the person's
    ``~/.claude/agents`` (``home`` defaults to ``~``; without one, only the project's)."""
    home = default_home() if home is None else home
    dirs: dict[Scope, Path] = {"project": project_root / ".claude" / "agents"}
    if home is not None:
        dirs["user"] = home / ".claude" / "agents"
    return dirs


def _names(value: Any) -> list[str] | None:
    """A ``tools`` value as names: Claude Code writes a comma-separated string; a YAML list
    works too. None when it is neither."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    return None


def _tools(names: list[str], path: Path, key: str, notices: list[str]) -> list[str]:
    """Claude Code tool names as stagecrew's, in order, each once; one notice per name that
    has no counterpart."""
    out: list[str] = []
    for raw in names:
        name, _, spec = raw.partition("(")
        name = name.strip()
        mapped = stagecrew_tools(name)
        if spec:
            notices.append(
                f"{path}: '{key}': {raw!r}: stagecrew gives an agent whole tools; the "
                f"specifier is ignored"
            )
        if name == "*":
            return ["*"]
        if not mapped:
            why = "stagecrew has no such tool" if name in CLAUDE_ONLY_TOOLS else "unknown tool"
            notices.append(f"{path}: '{key}': {name!r}: {why}; left out")
        out.extend(t for t in mapped if t not in out)
    return out


def _model(value: Any, path: Path, notices: list[str]) -> tuple[str | None, str | None, str | None]:
    """``(role, litellm model, alias as written)`` for a ``model`` value."""
    if value is None:
        return None, None, None
    text = str(value).strip()
    alias = text.lower()
    if alias == INHERIT:
        return None, None, text
    if alias in MODEL_ROLES:
        return MODEL_ROLES[alias], None, text
    if "/" in text:
        return None, text, text
    family = _FAMILY_RE.search(alias) if alias.startswith("claude") else None
    if family is not None:
        return MODEL_ROLES[family.group(1)], None, text
    notices.append(
        f"{path}: 'model': unknown model alias {text!r} (expected opus, sonnet, haiku, inherit "
        "or a model id); the agent runs on its parent's model"
    )
    return None, None, text


def parse_claude_agent(
    text: str, path: Path, scope: Scope = "project"
) -> tuple[ClaudeAgent | None, list[str]]:
    """One agent file's contents as a ``ClaudeAgent`` (None when it cannot be used, or says
    ``disabled: true``) and the notices about it, one line each, naming ``path``."""
    notices: list[str] = []
    try:
        data, body = split_frontmatter(text, path)
    except FrontmatterError as exc:
        return None, [f"{exc}; agent skipped"]
    if data.get("disabled") is True:
        return None, []
    name = data.get("name")
    name = name.strip() if isinstance(name, str) and name.strip() else path.stem
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        return None, [f"{path}: 'description' is required (when to use the agent); agent skipped"]
    if not body.strip():
        return None, [f"{path}: the body (the agent's system prompt) is empty; agent skipped"]
    tools: list[str] | Literal["*"] = "*"
    if "tools" in data and data["tools"] is not None:
        names = _names(data["tools"])
        if names is None:
            notices.append(f"{path}: 'tools' should be a comma-separated list; every tool given")
        else:
            mapped = _tools(names, path, "tools", notices)
            tools = "*" if mapped == ["*"] else mapped
    permissions: list[str] = []
    if data.get("disallowedTools") is not None:
        names = _names(data["disallowedTools"]) or []
        denied = _tools(names, path, "disallowedTools", notices)
        permissions = [f"deny {tool}" for tool in denied if tool != "*"]
    role, model, source_model = _model(data.get("model"), path, notices)
    max_steps = data.get("maxTurns")
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps <= 0
    ):
        notices.append(f"{path}: 'maxTurns' should be a positive number; ignored")
        max_steps = None
    mode = data.get("permissionMode")
    if mode not in (None, "default", "plan"):
        notices.append(
            f"{path}: 'permissionMode: {mode}' is not supported; stagecrew's rules apply"
        )
    unused = sorted(set(data) - _KNOWN_FIELDS - _QUIET_FIELDS)
    if unused:
        notices.append(f"{path}: not used by stagecrew: {', '.join(unused)}")
    agent = ClaudeAgent(
        name=name,
        description=description.strip(),
        system_prompt=body,
        source=path,
        scope=scope,
        tools=tools,
        role=role,
        model=model,
        source_model=source_model,
        permissions=permissions,
        max_steps=max_steps,
        read_only=mode == "plan",
    )
    return agent, notices


def load_claude_agents(directory: Path, scope: Scope = "project") -> ClaudeAgents:
    """Every ``*.md`` agent in ``directory`` (none when it is not there or cannot be listed:
    these are Claude Code's files, and stagecrew's own profiles still load)."""
    try:
        with os.scandir(directory) as entries:
            paths = sorted(Path(e.path) for e in entries if e.name.endswith(".md") and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return ClaudeAgents()
    except OSError as exc:
        return ClaudeAgents(notices=(f"{directory}: cannot list agents: {exc.strerror}",))
    agents: list[ClaudeAgent] = []
    notices: list[str] = []
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
            notices.append(f"{path}: cannot read agent: {why}; agent skipped")
            continue
        agent, problems = parse_claude_agent(text, path, scope)
        notices.extend(problems)
        if agent is not None:
            agents.append(agent)
    return ClaudeAgents(tuple(agents), tuple(notices))
