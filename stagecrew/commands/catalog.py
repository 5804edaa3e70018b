"""Custom commands: markdown prompts the person runs as ``/name args``.

Claude Code, OpenCode and stagecrew keep them in similar places; all are read as they are, so
a project's commands work without copying them anywhere. The file name is the command's name
(``review.md`` is ``/review``) and subdirectories namespace it (``frontend/component.md`` is
``/frontend:component``). The optional front matter: ``description``, ``argument-hint`` (text,
or a YAML list shown as ``[a] [b]``), ``allowed-tools``, ``model``, ``agent``; other keys are
ignored (each tool has a few of its own). The body is the prompt (``expand.py``).

Locations, lowest precedence first (a later one replaces a command of the same name, and the
replacement is recorded in ``shadowed`` so it can be shown)::

    ~/.config/opencode/command(s)/        the person's          OpenCode
    ~/.claude/commands/                   the person's          Claude Code
    <user config dir>/commands/           the person's          stagecrew
    .opencode/command(s)/                 the project's         OpenCode
    .claude/commands/                     the project's         Claude Code
    .stagecrew/commands/                  the project's         stagecrew

Skills the person may invoke (``user-invocable``, the default) are commands too: a skill
replaces a command of the same scope and name (Claude Code's rule), the project's anything of
the person's, and shipped skills come first of all. A broken file is one line in ``problems``;
the other commands load.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stagecrew.frontmatter import split_frontmatter
from stagecrew.layout import project_dir
from stagecrew.skills.allowed_tools import AllowedToolsError, allow_rules, split_tool_list
from stagecrew.skills.catalog import Problem, Skill, SkillCatalog, first_paragraph, hint_text

__all__ = [
    "CommandCatalog",
    "CommandFileError",
    "CustomCommand",
    "command_locations",
    "discover_commands",
    "load_command",
    "split_invocation",
]

Scope = Literal["shipped", "user", "project"]
Origin = Literal["stagecrew", "claude", "opencode", "skill"]
_SCOPE_RANK = {"shipped": 0, "user": 1, "project": 2}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


@dataclass(frozen=True)
class CustomCommand:
    """One command. ``name`` has no slash (``frontend:component``); ``allow_rules`` are its
    ``allowed-tools`` as stagecrew allow rules; ``source`` is the file it came from."""

    name: str
    body: str
    source: Path
    scope: Scope
    origin: Origin
    description: str = ""
    argument_hint: str = ""
    allowed_tools: tuple[str, ...] = ()
    allow_rules: tuple[str, ...] = ()
    model: str | None = None
    agent: str | None = None

    @property
    def slash(self) -> str:
        return f"/{self.name}"

    @property
    def label(self) -> str:
        """Where it comes from, in a few words: ``project .claude/commands``, ``user skill``."""
        kind = "skill" if self.origin == "skill" else f"{self.origin} command"
        return f"{self.scope} {kind}"


@dataclass
class CommandCatalog:
    """The commands by name, the files that could not be used, and which command hid which."""

    commands: dict[str, CustomCommand] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    shadowed: list[tuple[CustomCommand, CustomCommand]] = field(default_factory=list)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.removeprefix("/") in self.commands

    def get(self, name: str) -> CustomCommand | None:
        return self.commands.get(name.removeprefix("/"))

    def sorted(self) -> list[CustomCommand]:
        return [self.commands[n] for n in sorted(self.commands)]

    def match(self, line: str) -> tuple[CustomCommand, str] | None:
        """``(command, arguments)`` when ``line`` is ``/name args`` for a command here."""
        parts = split_invocation(line)
        if parts is None:
            return None
        command = self.commands.get(parts[0])
        return None if command is None else (command, parts[1])


def split_invocation(line: str) -> tuple[str, str] | None:
    """``("name", "args")`` for ``/name args``; None for anything else (``//x`` included,
    which the chat uses for a message that starts with a slash)."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    head, _, rest = text[1:].partition(" ")
    if "\n" in head:
        head, _, more = head.partition("\n")
        rest = more + (" " + rest if rest else "")
    return (head, rest.strip()) if head else None


def command_locations(
    project_root: Path, user_config_dir: Path | None, home: Path | None
) -> list[tuple[Path, Scope, Origin]]:
    """Where commands are looked for, lowest precedence first: (directory, scope, origin)."""
    out: list[tuple[Path, Scope, Origin]] = []
    if home is not None:
        xdg = os.environ.get("XDG_CONFIG_HOME")
        opencode = (Path(xdg) if xdg else home / ".config") / "opencode"
        out += [
            (opencode / "command", "user", "opencode"),
            (opencode / "commands", "user", "opencode"),
            (home / ".claude" / "commands", "user", "claude"),
        ]
    if user_config_dir is not None:
        out.append((user_config_dir / "commands", "user", "stagecrew"))
    out += [
        (project_root / ".opencode" / "command", "project", "opencode"),
        (project_root / ".opencode" / "commands", "project", "opencode"),
        (project_root / ".claude" / "commands", "project", "claude"),
        (project_dir(project_root) / "commands", "project", "stagecrew"),
    ]
    return out


def discover_commands(
    project_root: Path,
    *,
    user_config_dir: Path | None = None,
    home: Path | None = None,
    skills: SkillCatalog | None = None,
) -> CommandCatalog:
    """Every command visible from ``project_root``, with the user-invocable ``skills`` among
    them. ``home`` is where ``~/.claude`` lives (the caller passes ``Path.home()``)."""
    catalog = CommandCatalog()
    found: list[tuple[tuple[int, int, int], CustomCommand]] = []
    for order, (directory, scope, origin) in enumerate(
        command_locations(project_root, user_config_dir, home)
    ):
        for path, name in _command_files(directory, catalog.problems):
            try:
                command = load_command(path, name, scope=scope, origin=origin)
            except CommandFileError as exc:
                catalog.problems.append(Problem(exc.path, exc.problem, name))
                continue
            found.append(((_SCOPE_RANK[scope], 0, order), command))
    for skill in skills.for_person() if skills is not None else []:
        found.append(((_SCOPE_RANK[skill.scope], 1, 0), skill_command(skill)))
    for _, command in sorted(found, key=lambda item: item[0]):
        previous = catalog.commands.get(command.name)
        if previous is not None:
            catalog.shadowed.append((previous, command))
        catalog.commands[command.name] = command
    return catalog


def _command_files(directory: Path, problems: list[Problem]) -> list[tuple[Path, str]]:
    """``(path, name)`` of every ``*.md`` below ``directory`` (hidden entries skipped); a
    subdirectory that cannot be listed is a problem line, not the loss of the others."""
    if not directory.is_dir():
        return []

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else directory
        problems.append(Problem(where, f"cannot list commands: {exc.strerror or exc}"))

    out: list[tuple[Path, str]] = []
    for here, dirs, names in os.walk(directory, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if n.endswith(".md") and not n.startswith("."):
                rel = Path(here, n).relative_to(directory).with_suffix("")
                out.append((Path(here, n), ":".join(rel.parts)))
    return sorted(out, key=lambda item: item[1])


class CommandFileError(ValueError):
    """A command file that cannot be used; ``problem`` is what is wrong with ``path``."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def load_command(
    path: Path, name: str, *, scope: Scope = "project", origin: Origin = "stagecrew"
) -> CustomCommand:
    """The command in ``path``, named ``name``; ``CommandFileError`` says what is wrong."""
    if not _NAME_RE.match(name):
        raise CommandFileError(
            path, f"'{name}' cannot be typed as a command name (letters, digits, '.', '_', '-')"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise CommandFileError(path, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CommandFileError(
            path, f"not valid UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None
    data, body = split_frontmatter(text, path, required=False, lenient=True, error=CommandFileError)
    if not body.strip():
        raise CommandFileError(path, "the body (the command's prompt) is empty")
    try:
        entries = split_tool_list(data.get("allowed-tools"))
        rules = allow_rules(entries)
    except AllowedToolsError as exc:
        raise CommandFileError(path, f"field 'allowed-tools': {exc}") from None
    model = _text(data, "model", path) or None
    return CustomCommand(
        name=name,
        body=body,
        source=path,
        scope=scope,
        origin=origin,
        description=_text(data, "description", path) or first_paragraph(body),
        argument_hint=hint_text(data.get("argument-hint"), path, error=CommandFileError),
        allowed_tools=tuple(entries),
        allow_rules=tuple(rules),
        model=None if model == "inherit" else model,
        agent=_text(data, "agent", path) or None,
    )


def skill_command(skill: Skill) -> CustomCommand:
    """A user-invocable skill as a ``/name`` command: its body is the prompt."""
    return CustomCommand(
        name=skill.name,
        body=skill.body,
        source=skill.source,
        scope=skill.scope,
        origin="skill",
        description=skill.description,
        argument_hint=skill.argument_hint,
        allowed_tools=skill.allowed_tools,
        allow_rules=skill.allow_rules,
    )


def _text(data: dict[str, Any], key: str, path: Path) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise CommandFileError(path, f"field '{key}': must be text, got {value!r}")
    return " ".join(value.split())
