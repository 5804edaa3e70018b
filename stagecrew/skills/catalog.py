"""Skills: ``SKILL.md`` folders, found where Claude Code and stagecrew keep them.

A skill is a folder whose ``SKILL.md`` has a short front matter (``name``, ``description``,
``disable-model-invocation``, ``user-invocable``, ``allowed-tools``) above instructions, next
to any supporting files (references, scripts, templates). Only the name and description are
shown to the model up front; the body is loaded when the model asks for it (the ``skill``
tool, ``provider.py``), so a project can carry many skills without paying for them in every
request.

Locations, lowest precedence first (a later one replaces an earlier skill of the same name)::

    stagecrew/configs/skills/<name>/    shipped with stagecrew
    ~/.claude/skills/<name>/            the person's, Claude Code's place
    <user config dir>/skills/<name>/    the person's, stagecrew's place
    .claude/skills/<name>/              the project's, Claude Code's place
    .stagecrew/skills/<name>/           the project's, stagecrew's place

A broken ``SKILL.md`` is one line naming the file and the problem; the other skills load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stagecrew.frontmatter import split_frontmatter
from stagecrew.layout import project_dir
from stagecrew.skills.allowed_tools import AllowedToolsError, allow_rules, split_tool_list

__all__ = [
    "Problem",
    "Scope",
    "Skill",
    "SkillCatalog",
    "SkillError",
    "discover_skills",
    "first_paragraph",
    "hint_text",
    "load_skill",
    "shipped_skills_dir",
    "skill_locations",
]

Scope = Literal["shipped", "user", "project"]
SKILL_FILE = "SKILL.md"
# Claude Code's rule is lowercase letters, digits and hyphens; dots and underscores are
# accepted too (they are safe in a /name and a tool argument).
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DESCRIPTION_LIMIT = 1024


@dataclass(frozen=True)
class Problem:
    """A file that could not be used, as the one line a person reads."""

    path: Path
    message: str
    # The command or skill name the file would have had, so a /name that meets a broken
    # file can say what is wrong with it instead of "unknown command".
    name: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Skill:
    """One skill. ``folder`` is the real path of its folder (the root its files are read
    under); ``allow_rules`` are ``allowed-tools`` as stagecrew allow rules."""

    name: str
    description: str
    body: str
    folder: Path
    source: Path
    scope: Scope
    origin: str  # which convention's directory it came from: "stagecrew", "claude", "shipped"
    disable_model_invocation: bool = False
    user_invocable: bool = True
    allowed_tools: tuple[str, ...] = ()
    allow_rules: tuple[str, ...] = ()
    argument_hint: str = ""


@dataclass
class SkillCatalog:
    """The skills by name, what could not be loaded, and which skill hid which."""

    skills: dict[str, Skill] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # (hidden, winner): a skill replaced by one of the same name from a later location.
    shadowed: list[tuple[Skill, Skill]] = field(default_factory=list)

    def for_model(self) -> list[Skill]:
        """The skills the model may load, by name (a stable order keeps the prompt cacheable)."""
        return [s for _, s in sorted(self.skills.items()) if not s.disable_model_invocation]

    def for_person(self) -> list[Skill]:
        """The skills that are also ``/name`` commands."""
        return [s for _, s in sorted(self.skills.items()) if s.user_invocable]


def shipped_skills_dir() -> Path | None:
    """The skills shipped with stagecrew (``stagecrew/configs/skills``)."""
    from stagecrew.configs import shipped_dir

    return shipped_dir("skills")


def skill_locations(
    project_root: Path, user_config_dir: Path | None, home: Path | None
) -> list[tuple[Path, Scope, str]]:
    """Where skills are looked for, lowest precedence first: (directory, scope, origin)."""
    out: list[tuple[Path, Scope, str]] = []
    shipped = shipped_skills_dir()
    if shipped is not None:
        out.append((shipped, "shipped", "shipped"))
    if home is not None:
        out.append((home / ".claude" / "skills", "user", "claude"))
    if user_config_dir is not None:
        out.append((user_config_dir / "skills", "user", "stagecrew"))
    out.append((project_root / ".claude" / "skills", "project", "claude"))
    out.append((project_dir(project_root) / "skills", "project", "stagecrew"))
    return out


def discover_skills(
    project_root: Path,
    *,
    user_config_dir: Path | None = None,
    home: Path | None = None,
) -> SkillCatalog:
    """Every skill visible from ``project_root``; ``home`` is where ``~/.claude`` lives (the
    caller passes ``Path.home()``; tests pass a directory of their own)."""
    catalog = SkillCatalog()
    for directory, scope, origin in skill_locations(project_root, user_config_dir, home):
        for folder in _skill_folders(directory, catalog.problems):
            try:
                skill = load_skill(folder, scope=scope, origin=origin)
            except SkillError as exc:
                catalog.problems.append(Problem(exc.path, exc.problem, folder.name))
                continue
            previous = catalog.skills.get(skill.name)
            if previous is not None:
                catalog.shadowed.append((previous, skill))
            catalog.skills[skill.name] = skill
    return catalog


def _skill_folders(directory: Path, problems: list[Problem]) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            names = sorted(e.name for e in entries if not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        problems.append(Problem(directory, f"cannot list skills: {exc.strerror or exc}"))
        return []
    return [directory / n for n in names if (directory / n / SKILL_FILE).is_file()]


class SkillError(ValueError):
    """A ``SKILL.md`` that cannot be used; ``problem`` is what is wrong with ``path``."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def load_skill(folder: Path, *, scope: Scope = "project", origin: str = "stagecrew") -> Skill:
    """The skill in ``folder`` (its ``SKILL.md``); ``SkillError`` says what is wrong."""
    source = folder / SKILL_FILE
    try:
        text = source.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SkillError(source, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SkillError(source, f"not valid UTF-8 (byte {exc.start}); save it as UTF-8") from None
    data, body = split_frontmatter(text, source, required=False, lenient=True, error=SkillError)
    name = _text(data, "name", source) or folder.name
    if not _NAME_RE.match(name):
        raise SkillError(
            source, f"field 'name': {name!r} is not a usable name (letters, digits, '-', '_')"
        )
    if not body.strip():
        raise SkillError(source, "the body (the skill's instructions) is empty")
    description = _text(data, "description", source) or first_paragraph(body)
    try:
        entries = split_tool_list(data.get("allowed-tools"))
        rules = allow_rules(entries)
    except AllowedToolsError as exc:
        raise SkillError(source, f"field 'allowed-tools': {exc}") from None
    return Skill(
        name=name,
        description=description[:_DESCRIPTION_LIMIT],
        body=body,
        folder=Path(os.path.realpath(folder)),
        source=source,
        scope=scope,
        origin=origin,
        disable_model_invocation=_flag(data, "disable-model-invocation", False, source),
        user_invocable=_flag(data, "user-invocable", True, source),
        allowed_tools=tuple(entries),
        allow_rules=tuple(rules),
        argument_hint=hint_text(data.get("argument-hint"), source, error=SkillError),
    )


def _text(data: dict[str, Any], key: str, source: Path) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise SkillError(source, f"field '{key}': must be text, got {value!r}")
    return " ".join(value.split())


def _flag(data: dict[str, Any], key: str, default: bool, source: Path) -> bool:
    value = data.get(key, default)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise SkillError(source, f"field '{key}': must be true or false, got {value!r}")
    return value


def first_paragraph(body: str) -> str:
    """A description for a file without one: its first line of prose (Claude Code's rule)."""
    for line in body.splitlines():
        text = line.strip().lstrip("#").strip()
        if text:
            return text
    return ""


def hint_text(
    value: Any, source: Path, *, error: Callable[[Path, str], Exception] = SkillError
) -> str:
    """``argument-hint`` as the text shown after a /name. A YAML list (what an unquoted
    ``[pr-number] [priority]`` often becomes) is shown as ``[pr-number] [priority]``."""
    if value is None:
        return ""
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, (str, int, float)) and not isinstance(item, bool):
                text = str(item).strip()
                parts.append(text if text[:1] in "[<" else f"[{text}]")
            else:
                raise error(source, f"field 'argument-hint': cannot show {item!r} as a hint")
        return " ".join(p for p in parts if p)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return " ".join(str(value).split())
    raise error(source, f"field 'argument-hint': must be text or a list, got {value!r}")
