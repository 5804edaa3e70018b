"""Agent profiles: markdown files whose YAML frontmatter configures an agent and whose body is
its system prompt.

Markdown because the prompt is the bulk of a profile and people edit it like prose; the
frontmatter keeps the few knobs (tools, permissions, model) next to the words they shape.
Profiles are found in three places, later ones replacing earlier ones by name (the file stem):
the ones shipped with stagecrew, the user's config dir (``<dir>/agents/*.md``), and the project
(``.stagecrew/agents/*.md``). A broken profile is an error naming the file and the field, not a
silently skipped agent: a typo in ``permissions`` must never quietly widen what an agent may do.

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

import importlib.resources
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stagecrew.config import describe_os_error
from stagecrew.layout import agents_dir
from stagecrew.tools.permissions import Rule, RuleError, parse_rule

__all__ = [
    "AgentProfile",
    "ProfileError",
    "Role",
    "discover_profiles",
    "load_profile",
    "parse_profile",
    "shipped_agents_dir",
]

Role = Literal["primary", "subagent", "judge", "checkpoint", "candidate"]


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


def _split_frontmatter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    text = text.lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise ProfileError(path, "missing YAML frontmatter: the file must start with a '---' line")
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            header, body = "".join(lines[1:i]), "".join(lines[i + 1 :])
            break
    else:
        raise ProfileError(path, "unterminated YAML frontmatter: no closing '---' line")
    try:
        data = yaml.safe_load(header) if header.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""  # +1 for '---', +1 base
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(path, f"invalid YAML frontmatter{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ProfileError(path, "the frontmatter must be a mapping of field: value")
    return data, body.strip() + "\n" if body.strip() else ""


def parse_profile(text: str, name: str, source: Path | str = "<string>") -> AgentProfile:
    """Build a profile from file contents; ``source`` is only used in messages and ``.source``."""
    path = Path(source)
    data, body = _split_frontmatter(text, path)
    for reserved in ("name", "system_prompt", "source"):
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


_FRONTMATTER_FIELDS = frozenset(AgentProfile.model_fields) - {"name", "system_prompt", "source"}


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
    """Where the built-in profiles live: a ``stagecrew.configs`` package when installed that way,
    else ``configs/agents`` at the repository root next to the ``stagecrew`` package."""
    try:
        resource = importlib.resources.files("stagecrew.configs") / "agents"
        if resource.is_dir():
            return Path(os.fspath(resource))  # type: ignore[arg-type]
    except (ModuleNotFoundError, TypeError, NotADirectoryError):
        pass
    candidate = Path(__file__).resolve().parent.parent / "configs" / "agents"
    return candidate if candidate.is_dir() else None


def _load_dir(directory: Path | None, into: dict[str, AgentProfile]) -> None:
    # Only a directory that is not there means "no profiles here"; one the user cannot list
    # is an error (skipping it would silently drop the project's agents and their rules).
    if directory is None:
        return
    try:
        with os.scandir(directory) as entries:
            paths = sorted(
                Path(entry.path)
                for entry in entries
                if entry.name.endswith(".md") and entry.is_file()
            )
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        problem = describe_os_error(directory, exc, want="rx", own=directory.parent)
        raise ProfileError(directory, f"cannot list agent profiles: {problem}") from None
    for path in paths:
        into[path.stem] = load_profile(path)


def discover_profiles(
    project_root: Path, user_config_dir: Path | None = None
) -> dict[str, AgentProfile]:
    """All profiles by name: shipped < ``user_config_dir/agents`` < ``.stagecrew/agents``."""
    profiles: dict[str, AgentProfile] = {}
    _load_dir(shipped_agents_dir(), profiles)
    if user_config_dir is not None:
        _load_dir(Path(user_config_dir) / "agents", profiles)
    _load_dir(agents_dir(project_root), profiles)
    return profiles
