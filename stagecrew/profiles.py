"""Agent profiles: markdown files whose YAML frontmatter configures an agent and whose body is
its system prompt.

Markdown because the prompt is the bulk of a profile and people edit it like prose; the
frontmatter keeps the few knobs (tools, permissions, model) next to the words they shape.
Profiles are found in five places, later ones replacing earlier ones by name:

1. the ones shipped with stagecrew (``stagecrew/configs/agents``);
2. Claude Code's user subagents (``~/.claude/agents/*.md``);
3. the user's config dir (``<dir>/agents/*.md``);
4. Claude Code's project subagents (``.claude/agents/*.md``);
5. the project's own (``.stagecrew/agents/*.md``).

The project beats the person (it is the more specific statement, as in Claude Code, where
project agents beat user agents), and at each level stagecrew's own file beats Claude Code's:
someone who wrote a stagecrew profile of the same name wrote it for stagecrew. Claude Code's
subagents are translated by ``stagecrew.claude.agents`` (their ``name`` field names them; the
file stem names stagecrew's). A broken stagecrew profile is an error naming the file and the
field, not a silently skipped agent: a typo in ``permissions`` must never quietly widen what an
agent may do. A Claude Code file stagecrew cannot use is a notice instead (it is Claude Code's
file, and one bad file there must not stop stagecrew); ``discover_profile_catalog`` returns
those notices.

Example::

    ---
    description: Reviews diffs and reports problems
    role: subagent
    tools: [read, grep, glob, bash]
    permissions: ["deny bash(git push *)"]
    max_steps: 40
    read_only: true
    ---
    You review code. ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stagecrew.claude.agents import claude_agent_dirs, load_claude_agents
from stagecrew.config import describe_os_error
from stagecrew.frontmatter import split_frontmatter
from stagecrew.layout import agents_dir
from stagecrew.messages import ModelSpecWire
from stagecrew.tools.permissions import Rule, RuleError, parse_rule

__all__ = [
    "AgentProfile",
    "ProfileCatalog",
    "ProfileError",
    "Role",
    "discover_profile_catalog",
    "discover_profiles",
    "load_profile",
    "parse_profile",
    "profile_descriptions",
    "profile_dirs",
    "shipped_agents_dir",
]

Role = Literal["primary", "subagent", "judge", "checkpoint", "candidate"]
SourceFormat = Literal["stagecrew", "claude"]


class ProfileError(ValueError):
    """A profile that cannot be used; says which file and, when known, which field."""

    def __init__(self, path: Path | str, message: str, field: str | None = None) -> None:
        self.path = Path(path)
        self.field = field
        where = f"{path}: field '{field}': " if field else f"{path}: "
        super().__init__(where + message)


class AgentProfile(BaseModel):
    """One agent's configuration. ``system_prompt`` is the markdown body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = Field(min_length=1)
    model: str | None = None
    role: Role | None = None
    tools: list[str] | Literal["*"] = "*"
    permissions: list[str] = Field(default_factory=list)
    max_steps: int | None = Field(default=None, gt=0)
    read_only: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    system_prompt: str = Field(min_length=1)
    source: Path | None = None
    # Which format the file is in; for Claude Code's subagents, the ``model`` they named
    # (``opus``, ``inherit``, ``claude-sonnet-4-5``...), which ``role``/``model`` translate.
    source_format: SourceFormat = "stagecrew"
    source_model: str | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> Any:
        if isinstance(value, str):
            return "*" if value.strip() == "*" else [value]
        if isinstance(value, list) and "*" in value:
            return "*"
        if isinstance(value, list):
            for item in value:
                if not isinstance(item, str) or not item.strip():
                    raise ValueError(f"tool names must be non-empty strings, got {item!r}")
            return [v.strip().lower() for v in value]
        raise ValueError(f"must be a list of tool names or '*', got {value!r}")

    @field_validator("permissions", mode="before")
    @classmethod
    def _permissions(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError("must be a list of rule strings such as 'deny bash(git push *)'")
        for item in value:
            try:
                parse_rule(item)
            except RuleError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a litellm model string such as 'anthropic/claude-sonnet-4'")
        return value

    @model_validator(mode="after")
    def _model_or_role(self) -> AgentProfile:
        if self.model is not None and self.role is not None:
            raise ValueError(
                "set either 'model' (a litellm model string) or 'role' (which model the "
                "config assigns to that role), not both"
            )
        return self

    def allows_tool(self, name: str) -> bool:
        return self.tools == "*" or name.lower() in self.tools

    def permission_rules(self) -> list[Rule]:
        """The profile's rules, tagged as the ``agent`` layer for ``combine_layers``."""
        return [parse_rule(text, "agent") for text in self.permissions]

    def child_model(
        self, parent_model: ModelSpecWire, role_models: Mapping[str, ModelSpecWire]
    ) -> ModelSpecWire:
        """The model this profile runs on as a subagent, before its own ``model`` and
        ``temperature`` overrides (``profile_model_overrides``).

        A stagecrew profile runs on the ``subagent`` model unless it names another role
        (``role: primary`` means "the main model" for a top-level agent; as a child it is a
        subagent). A Claude Code subagent's role is its model tier, so ``opus`` does get the
        primary model, and ``inherit`` (or no ``model``: Claude Code's default) gets the
        parent's own model."""
        if self.source_format == "claude":
            if self.role is None:
                return parent_model
            return role_models.get(self.role, parent_model)
        model = role_models.get("subagent", parent_model)
        if self.role and self.role != "primary" and self.role in role_models:
            model = role_models[self.role]
        return model


def _split_frontmatter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    return split_frontmatter(text, path, error=ProfileError)


def parse_profile(text: str, name: str, source: Path | str = "<string>") -> AgentProfile:
    """Build a profile from file contents; ``source`` is only used in messages and ``.source``."""
    path = Path(source)
    data, body = _split_frontmatter(text, path)
    for reserved in ("name", "system_prompt", "source", "source_format", "source_model"):
        if reserved in data:
            raise ProfileError(
                path,
                "is set by the loader (name = file name, system prompt = body), not frontmatter",
                reserved,
            )
    try:
        return AgentProfile(
            name=name, system_prompt=body, source=None if source == "<string>" else path, **data
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        field = loc[0] if loc else None
        if field == "system_prompt":
            raise ProfileError(path, "the body (system prompt) is empty") from None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field; known fields are {sorted(_FRONTMATTER_FIELDS)}"
        elif len(loc) > 1:
            msg = f"item {'.'.join(loc[1:])}: {msg}"
        more = len(exc.errors()) - 1
        if more:
            msg += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ProfileError(path, msg, field) from None


_FRONTMATTER_FIELDS = frozenset(AgentProfile.model_fields) - {
    "name",
    "system_prompt",
    "source",
    "source_format",
    "source_model",
}


def load_profile(path: Path | str) -> AgentProfile:
    """Load one ``<name>.md`` profile; ``ProfileError`` on anything wrong with it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        problem = describe_os_error(path, exc, own=path.parent)
        raise ProfileError(path, f"cannot read profile: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(
            path, f"cannot read profile: not valid UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None
    return parse_profile(text, path.stem, path)


def shipped_agents_dir() -> Path | None:
    """Where the built-in profiles live (``stagecrew/configs/agents``)."""
    from stagecrew.configs import shipped_dir

    return shipped_dir("agents")


def _stagecrew_dir(directory: Path | None) -> list[AgentProfile]:
    # Only a directory that is not there means "no profiles here"; one the user cannot list
    # is an error (skipping it would silently drop the project's agents and their rules).
    if directory is None:
        return []
    try:
        with os.scandir(directory) as entries:
            paths = sorted(
                Path(entry.path)
                for entry in entries
                if entry.name.endswith(".md") and entry.is_file()
            )
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        problem = describe_os_error(directory, exc, want="rx", own=directory.parent)
        raise ProfileError(directory, f"cannot list agent profiles: {problem}") from None
    return [load_profile(path) for path in paths]


def _claude_dir(
    directory: Path, scope: Literal["project", "user"], notices: list[str]
) -> list[AgentProfile]:
    found = load_claude_agents(directory, scope)
    notices.extend(found.notices)
    out: list[AgentProfile] = []
    seen: dict[str, Path] = {}
    for agent in found.agents:
        if agent.name in seen:  # Claude Code names agents by ``name``, not by file
            notices.append(
                f"{agent.source}: agent '{agent.name}' is also defined in {seen[agent.name]}; "
                "this file is used"
            )
        seen[agent.name] = agent.source
        try:
            out.append(AgentProfile(**agent.profile_fields()))
        except ValidationError as exc:  # the translation checks each field; this guards drift
            err = exc.errors()[0]
            notices.append(f"{agent.source}: {err['msg']}; agent skipped")
    return out


@dataclass
class ProfileCatalog:
    """Every profile by name, and what a person may want to know about how they were found."""

    profiles: dict[str, AgentProfile] = field(default_factory=dict)
    # One line per Claude Code file stagecrew could not use fully, naming the file.
    notices: list[str] = field(default_factory=list)
    # ``(name, the file that won, the file it replaced)``, for ``crew import claude``.
    overridden: list[tuple[str, Path | None, Path | None]] = field(default_factory=list)

    def add(self, profiles: list[AgentProfile]) -> None:
        for profile in profiles:
            replaced = self.profiles.get(profile.name)
            if replaced is not None:
                self.overridden.append((profile.name, profile.source, replaced.source))
            self.profiles[profile.name] = profile


def profile_dirs(
    project_root: Path, user_config_dir: Path | None = None, *, home: Path | None = None
) -> list[Path]:
    """Every directory profiles are read from, lowest precedence first (for callers that cache
    profiles and must notice when one of them changes)."""
    claude = claude_agent_dirs(project_root, home)
    shipped = shipped_agents_dir()
    dirs = [shipped] if shipped is not None else []
    if "user" in claude:
        dirs.append(claude["user"])
    if user_config_dir is not None:
        dirs.append(Path(user_config_dir) / "agents")
    dirs += [claude["project"], agents_dir(project_root)]
    return dirs


def discover_profile_catalog(
    project_root: Path, user_config_dir: Path | None = None, *, home: Path | None = None
) -> ProfileCatalog:
    """All profiles by name, in the precedence of the module docstring, with the notices about
    Claude Code's files. ``ProfileError`` for a stagecrew profile that cannot be used.
    ``home`` holds the person's ``.claude/`` (default ``~``; tests point it elsewhere)."""
    catalog = ProfileCatalog()
    claude = claude_agent_dirs(project_root, home)
    catalog.add(_stagecrew_dir(shipped_agents_dir()))
    if "user" in claude:
        catalog.add(_claude_dir(claude["user"], "user", catalog.notices))
    if user_config_dir is not None:
        catalog.add(_stagecrew_dir(Path(user_config_dir) / "agents"))
    catalog.add(_claude_dir(claude["project"], "project", catalog.notices))
    catalog.add(_stagecrew_dir(agents_dir(project_root)))
    return catalog


def discover_profiles(
    project_root: Path, user_config_dir: Path | None = None, *, home: Path | None = None
) -> dict[str, AgentProfile]:
    """All profiles by name: shipped < ``~/.claude/agents`` < ``user_config_dir/agents`` <
    ``.claude/agents`` < ``.stagecrew/agents`` (``discover_profile_catalog`` for the notices)."""
    return discover_profile_catalog(project_root, user_config_dir, home=home).profiles


def profile_descriptions(
    project_root: Path, user_config_dir: Path | None = None, *, home: Path | None = None
) -> dict[str, str]:
    """``{name: description}`` of every profile, for the ``task`` tool's description. Never
    raises: a broken profile is reported when someone uses it, and an agent must still start
    (with the shipped profiles listed) while the person fixes it."""
    try:
        profiles = discover_profiles(project_root, user_config_dir, home=home)
    except ProfileError:
        try:
            profiles = {p.name: p for p in _stagecrew_dir(shipped_agents_dir())}
        except ProfileError:
            return {}
    return {name: profile.description for name, profile in sorted(profiles.items())}
