"""What the model sees of skills: a short "Skills" section in the system prompt, and the
``skill`` tool that loads one (the ``skills`` provider kind).

Progressive disclosure: the system prompt lists each skill's name and description only; the
body costs tokens once the model decides it needs it (``{"name": "x"}``), and the files next
to it (``{"name": "x", "file": "reference.md"}``) only when the body points there. Files are
read with the workspace file checks rooted at the skill's folder, so ``..``, absolute paths
and symlinks leading out of the folder are refused like a path outside the workspace.

The session builder decides which skills there are (``provider_spec``) and puts them in the
spec's options; the provider is built where the agent runs and reads the folders there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagecrew.skills.catalog import SKILL_FILE, Skill, SkillError, load_skill
from stagecrew.tools.base import ToolContext, ToolResult, WorkspaceError
from stagecrew.tools.paths import resolve_path, run_blocking, safe_read_bytes
from stagecrew.tools.providers import ProviderEnv, ProviderSpec, ToolSpec

__all__ = [
    "KIND",
    "TOOL_NAME",
    "SkillEntry",
    "SkillTools",
    "create",
    "entries_of",
    "provider_spec",
    "skills_section",
]

KIND = "skills"
TOOL_NAME = "skill"
_FILE_LIMIT = 100_000  # characters of a supporting file returned at once
_LISTED_FILES = 50


@dataclass(frozen=True)
class SkillEntry:
    """A skill as the spec carries it: enough to list it and find its folder again."""

    name: str
    description: str
    folder: str
    allow_rules: tuple[str, ...] = ()

    def option(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "folder": self.folder,
            "allow_rules": list(self.allow_rules),
        }

    @classmethod
    def from_option(cls, value: dict[str, Any]) -> SkillEntry:
        return cls(
            name=str(value["name"]),
            description=str(value.get("description", "")),
            folder=str(value["folder"]),
            allow_rules=tuple(value.get("allow_rules", ())),
        )


def provider_spec(skills: list[Skill]) -> ProviderSpec | None:
    """The ``skills`` provider for these (model-invocable) skills; none, no provider."""
    entries = [SkillEntry(s.name, s.description, str(s.folder), s.allow_rules) for s in skills]
    if not entries:
        return None
    return ProviderSpec(
        kind=KIND, name=KIND, options={"skills": [e.option() for e in sorted_entries(entries)]}
    )


def sorted_entries(entries: list[SkillEntry]) -> list[SkillEntry]:
    return sorted(entries, key=lambda e: e.name)


def entries_of(spec: ProviderSpec) -> list[SkillEntry]:
    """The skills a ``skills`` provider spec carries, by name."""
    return sorted_entries([SkillEntry.from_option(o) for o in spec.options.get("skills", [])])


def skills_section(specs: list[ProviderSpec]) -> str:
    """The system prompt's "Skills" section for the skills providers among ``specs`` (empty
    without one). Names in a stable order, so the prompt prefix stays cacheable."""
    entries = [e for spec in specs if spec.kind == KIND for e in entries_of(spec)]
    if not entries:
        return ""
    lines = [
        "# Skills",
        "",
        "Skills are instructions for particular kinds of task, loaded when needed. When the "
        f"task matches a skill's description, call the `{TOOL_NAME}` tool with its name first "
        "and follow what it returns.",
        "",
    ]
    lines += [f"- {e.name}: {e.description}" for e in entries]
    return "\n".join(lines)


class SkillTools:
    """The ``skill`` tool over the skills the session builder chose."""

    name = KIND

    def __init__(self, entries: list[SkillEntry]) -> None:
        self.entries = {e.name: e for e in entries}

    def specs(self) -> list[ToolSpec]:
        names = sorted(self.entries)
        parameters = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": names, "description": "The skill's name."},
                "file": {
                    "type": "string",
                    "description": "A supporting file in the skill's folder, relative to it "
                    "(only when the skill's instructions point to one).",
                },
            },
            "required": ["name"],
            "additionalProperties": False,
        }
        description = (
            "Load a skill's instructions (listed under Skills in the system prompt); with "
            "`file`, read one of the skill's supporting files."
        )
        return [ToolSpec(TOOL_NAME, description, parameters, read_only=True, provider=self.name)]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        skill_name = arguments.get("name")
        file = arguments.get("file")
        if not isinstance(skill_name, str) or (file is not None and not isinstance(file, str)):
            return ToolResult(
                content="Invalid arguments for tool 'skill': 'name' (and 'file', if given) must "
                "be strings",
                is_error=True,
                invalid_arguments=True,
            )
        entry = self.entries.get(skill_name)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            return ToolResult(
                content=f"No skill named '{skill_name}'. Skills: {known}", is_error=True
            )
        if file:
            return await run_blocking(_read_file, entry, file)
        return await run_blocking(_load_body, entry)


def _load_body(entry: SkillEntry) -> ToolResult:
    try:
        skill = load_skill(Path(entry.folder))
    except SkillError as exc:
        return ToolResult(content=f"Skill '{entry.name}' cannot be loaded: {exc}", is_error=True)
    files = _supporting_files(Path(entry.folder))
    text = [f'<skill name="{entry.name}">', skill.body.rstrip(), "</skill>"]
    if files:
        shown = ", ".join(files[:_LISTED_FILES])
        more = f" (and {len(files) - _LISTED_FILES} more)" if len(files) > _LISTED_FILES else ""
        text.append(
            f"Files in this skill's folder: {shown}{more}. Read one with "
            f'{TOOL_NAME} {{"name": "{entry.name}", "file": "<path>"}} when the instructions '
            "call for it."
        )
    # The skill's allowed-tools, for the loop to pre-approve (see the package doc).
    return ToolResult(content="\n".join(text), metadata={"allow_rules": list(entry.allow_rules)})


def _read_file(entry: SkillEntry, file: str) -> ToolResult:
    root = ToolContext(workspace=Path(entry.folder))
    try:
        path = resolve_path(root, file)
        data = safe_read_bytes(root, path)
    except WorkspaceError:
        return ToolResult(
            content=f"'{file}' is outside the folder of skill '{entry.name}'; only its own "
            "files can be read",
            is_error=True,
        )
    except FileNotFoundError:
        files = ", ".join(_supporting_files(Path(entry.folder))[:_LISTED_FILES]) or "none"
        return ToolResult(
            content=f"Skill '{entry.name}' has no file '{file}'. Its files: {files}",
            is_error=True,
        )
    except OSError as exc:
        return ToolResult(content=f"cannot read '{file}': {exc}", is_error=True)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ToolResult(
            content=f"'{file}' is not a text file (not UTF-8); it cannot be shown", is_error=True
        )
    if len(text) > _FILE_LIMIT:
        text = text[:_FILE_LIMIT] + f"\n[… cut at {_FILE_LIMIT:,} of {len(text):,} characters]"
    return ToolResult(content=text)


def _supporting_files(folder: Path) -> list[str]:
    """The skill's files besides SKILL.md, relative to its folder, without following links
    to directories (a link out of the folder must not list what is behind it)."""
    out: list[str] = []
    for here, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            rel = os.path.relpath(os.path.join(here, n), folder)
            if rel != SKILL_FILE and not n.startswith("."):
                out.append(rel)
        if len(out) > 4 * _LISTED_FILES:
            break
    return out


async def create(spec: ProviderSpec, env: ProviderEnv) -> SkillTools:
    """The factory ``PROVIDERS`` names for the ``skills`` kind."""
    return SkillTools(entries_of(spec))
