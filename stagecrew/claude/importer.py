"""``crew import claude``: what of a Claude Code setup stagecrew uses, and an optional copy.

stagecrew already reads a Claude Code setup live (instruction files, commands, skills, agents,
permission rules, hooks, ``.mcp.json``), so the import is first of all a report: each item
found, how stagecrew maps it, what it cannot use, and what cannot be resolved. Every item is
read by the module that reads it for a session (``memory.instructions``, ``commands``,
``skills``, ``claude.agents``, ``claude.permissions``, ``hooks.config``, ``mcp.config``), so
the report shows exactly what a session gets; this module parses no file format itself.

Reading runs nothing: no hook, no ``!`cmd``` of a command, no MCP server; ``${VAR}``
references are validated as written and never expanded (only a reference to an unset
variable without a default is named, by its name). Settings ``env`` values are never read
out: only their names are reported.

``write_plan`` + ``apply_plan`` (``--write``) copy the project's part of the setup into
``.stagecrew/`` for people leaving Claude Code's files behind:

* commands and skills are copied byte for byte (stagecrew reads their format as it is);
* agents become stagecrew profiles (tools already mapped to stagecrew's names, the model
  alias as a role, ``disallowedTools`` as deny rules);
* permission rules, hooks and MCP servers are added to ``.stagecrew/config.json``: a rule in
  stagecrew's syntax where one means exactly the same, else in Claude Code's syntax (which
  the engine reads) with a note; hooks as they are; servers with ``${VAR}`` kept.

Nothing existing is ever replaced: a file that is already there is left alone (``unchanged``
when it holds the same bytes, else ``kept``, which the CLI turns into exit 1), and
``config.json`` only gains what it lacks (a rule, a hook group, a server name); a server of
the same name configured differently is kept and named. User-level items (``~/.claude``) stay
where they are: they are the person's, and a project directory is no place for them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from stagecrew.claude.agents import ClaudeAgent, claude_agent_dirs, load_claude_agents
from stagecrew.claude.permissions import ClaudeRule, translate_permissions
from stagecrew.claude.settings import SettingsFile, default_home, read_settings, settings_files
from stagecrew.config import ConfigError, read_json_file, user_config_dir
from stagecrew.layout import config_file, project_dir

if TYPE_CHECKING:
    from stagecrew.commands import CustomCommand
    from stagecrew.skills import Skill

__all__ = [
    "ClaudeSetup",
    "Item",
    "Planned",
    "WritePlan",
    "Written",
    "apply_plan",
    "read_claude_setup",
    "translate_rule",
    "write_plan",
]

Kind = Literal[
    "instruction",
    "command",
    "skill",
    "agent",
    "mcp_server",
    "permission_rule",
    "hook",
    "env",
    "model",
]
Status = Literal["created", "updated", "unchanged", "kept", "failed"]

CONFIG_LABEL = ".stagecrew/config.json"
# Settings keys stagecrew reads; any other key of a settings file is listed as unsupported.
_USED_SETTINGS_KEYS = frozenset({"$schema", "permissions", "hooks", "env", "model"})
_KNOWN_MODELS = frozenset({"opus", "sonnet", "haiku", "inherit", "default", "opusplan"})
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ACTION_ORDER = ("allow", "ask", "deny")  # last-match order that keeps deny > ask > allow


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Item:
    """One thing found: what people call it, where it is, and what stagecrew does with it.

    ``details`` holds the kind's own facts for ``--json`` (an agent's role, a server's
    transport, a rule's action); it never holds a variable's value."""

    kind: Kind
    name: str
    source: str
    scope: str
    maps_to: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        base = {"kind": self.kind, "name": self.name, "source": self.source}
        return {**base, "scope": self.scope, "maps_to": self.maps_to, **self.details}


@dataclass
class ClaudeSetup:
    """Everything read, with the pieces ``write_plan`` translates."""

    project_root: Path
    home: Path | None
    items: list[Item] = field(default_factory=list)
    # One line each: what cannot be resolved (a broken file, a missing import or directory, an
    # unknown alias, an unset variable); the rest of the setup is still read.
    warnings: list[str] = field(default_factory=list)
    # One line each: what is valid for Claude Code but has no use in stagecrew.
    unsupported: list[str] = field(default_factory=list)
    # The project's own parts, for ``--write`` (user-level items are reported, not copied).
    commands: list[CustomCommand] = field(default_factory=list)  # from .claude/commands
    skills: list[Skill] = field(default_factory=list)  # from .claude/skills
    agents: list[ClaudeAgent] = field(default_factory=list)
    rules: list[ClaudeRule] = field(default_factory=list)
    hooks: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    mcp_servers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        """Whether there was anything of Claude Code's at all (files with problems count)."""
        return bool(self.items or self.warnings or self.unsupported)

    def of_kind(self, kind: Kind) -> list[Item]:
        return [item for item in self.items if item.kind == kind]

    def counts(self) -> dict[str, Any]:
        """Counts per kind (stable keys for scripts). ``instruction_files`` are the files read
        on their own (rules included), ``imports`` the files they import; rules and hooks are
        counted per action and per event."""
        instructions = self.of_kind("instruction")
        imports = [i for i in instructions if i.details.get("imported_by")]
        rules: dict[str, int] = {"deny": 0, "ask": 0, "allow": 0}
        for item in self.of_kind("permission_rule"):
            rules[item.details["action"]] += 1
        hooks: dict[str, int] = {}
        for item in self.of_kind("hook"):
            hooks[item.name] = hooks.get(item.name, 0) + 1
        return {
            "instruction_files": len(instructions) - len(imports),
            "imports": len(imports),
            "commands": len(self.of_kind("command")),
            "skills": len(self.of_kind("skill")),
            "agents": len(self.of_kind("agent")),
            "mcp_servers": len(self.of_kind("mcp_server")),
            "permission_rules": rules,
            "hooks": hooks,
            "env": len(self.of_kind("env")),
            "model": len(self.of_kind("model")),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "project": str(self.project_root),
            "home": None if self.home is None else str(self.home),
            "found": self.found,
            "counts": self.counts(),
            "items": [item.to_json() for item in self.items],
            "warnings": list(self.warnings),
            "unsupported": list(self.unsupported),
        }


# ----------------------------------------------------------------------------- reading


class _Reader:
    """Reads one project's and one person's Claude Code setup into a ``ClaudeSetup``."""

    def __init__(self, project_root: Path, home: Path | None, environ: Mapping[str, str]):
        self.root = Path(os.path.realpath(project_root))
        self.home = None if home is None else Path(os.path.realpath(home))
        self.environ = environ
        self.setup = ClaudeSetup(self.root, self.home)

    # -- helpers ------------------------------------------------------------------------------

    def label(self, path: Path | str) -> str:
        """A path as people read it: relative to the project, ``~/`` in the home directory."""
        p = Path(os.path.abspath(path))
        if p.is_relative_to(self.root):
            return p.relative_to(self.root).as_posix()
        if self.home is not None and p.is_relative_to(self.home):
            return "~/" + p.relative_to(self.home).as_posix()
        return str(p)

    def add(
        self, kind: Kind, name: str, source: str, scope: str, maps_to: str, **details: Any
    ) -> None:
        self.setup.items.append(Item(kind, name, source, scope, maps_to, details))

    def warn(self, lines: Iterable[str]) -> None:
        for line in lines:
            if line not in self.setup.warnings:
                self.setup.warnings.append(line)

    def claude_dirs(self, name: str) -> list[Path]:
        """``~/.claude/<name>`` and ``.claude/<name>``: where Claude Code's files of a kind are."""
        dirs = [self.root / ".claude" / name]
        return dirs if self.home is None else [self.home / ".claude" / name, *dirs]

    def is_under(self, path: Path, dirs: Iterable[Path]) -> bool:
        return any(Path(os.path.abspath(path)).is_relative_to(d) for d in dirs)

    # -- the kinds ----------------------------------------------------------------------------

    def read(self) -> ClaudeSetup:
        self.instructions()
        self.commands_and_skills()
        self.agents()
        self.mcp()
        files = self.settings()
        for settings, data in files:
            self.permissions(settings, data)
        for settings, data in files:
            self.hooks(settings, data)
        for settings, data in files:
            self.env_and_model(settings, data)
        return self.setup

    def instructions(self) -> None:
        """Claude Code's instruction files and their imports (``AGENTS.md`` and stagecrew's own
        files are not Claude Code's and are left out; their problems are still warnings)."""
        from stagecrew.memory.instructions import load_instructions

        found = load_instructions(self.root, home=self.home, config_dir=user_config_dir())
        self.warn(found.notices)
        scope = "project"
        claude_file = False
        for file in [*found.files, *found.conditional]:
            src = file.source
            if src.kind != "import":
                claude_file = _is_claude_instruction(Path(src.label))
                scope = {"user": "user", "local": "local"}.get(src.kind, "project")
                if src.label.startswith("~/"):
                    scope = "user"
            if not claude_file:
                continue
            maps_to = "read as is, into the system prompt"
            if src.paths:
                maps_to = "read as is, when the agent first reads " + ", ".join(src.paths)
            details = {"imported_by": src.imported_by, "bytes": src.size_bytes}
            self.add("instruction", src.label, src.label, scope, maps_to, **details)

    def commands_and_skills(self) -> None:
        """``.claude/commands`` and ``.claude/skills`` (the person's and the project's)."""
        from stagecrew.actors.builder import custom_setup

        setup = custom_setup(self.root, home=self.home)
        command_dirs, skill_dirs = self.claude_dirs("commands"), self.claude_dirs("skills")
        problems = [*setup.commands.problems, *setup.skills.problems]
        self.warn(str(p) for p in problems if self.is_under(p.path, command_dirs + skill_dirs))
        winners = {c.name: c for c in setup.commands.commands.values()}
        hidden = [old for old, _ in setup.commands.shadowed]
        for command in sorted([*winners.values(), *hidden], key=lambda c: (c.name, c.scope)):
            if command.origin == "claude":
                self.command(command, winners[command.name])
        skill_winners = setup.skills.skills
        skills = [*skill_winners.values(), *(old for old, _ in setup.skills.shadowed)]
        for skill in sorted(skills, key=lambda s: (s.name, s.scope)):
            if skill.origin == "claude":
                self.skill(skill, skill_winners[skill.name])

    def command(self, command: CustomCommand, winner: CustomCommand) -> None:
        name = command.slash + (f" {command.argument_hint}" if command.argument_hint else "")
        maps_to = 'read as is: /name in the chat and crew run "/name args"'
        if winner is not command:
            maps_to = f"replaced by the {winner.label} {self.label(winner.source)}"
        if command.scope == "project":
            self.setup.commands.append(command)
        details = {"description": command.description, "argument_hint": command.argument_hint}
        self.add("command", name, self.label(command.source), command.scope, maps_to, **details)

    def skill(self, skill: Skill, winner: Skill) -> None:
        files = _supporting_files(skill.source.parent)
        maps_to = "read as is: name and description in the prompt, the body by the skill tool"
        if skill.disable_model_invocation:
            maps_to = "read as is: /name only (disable-model-invocation)"
        elif skill.user_invocable:
            maps_to += ", and /name"
        if winner is not skill:
            maps_to = f"replaced by the {winner.scope} skill {self.label(winner.source)}"
        if skill.scope == "project":
            self.setup.skills.append(skill)
        details = {"description": skill.description, "supporting_files": len(files)}
        self.add("skill", skill.name, self.label(skill.source), skill.scope, maps_to, **details)

    def agents(self) -> None:
        """``.claude/agents/*.md`` as profiles, and which of them another profile replaces."""
        from stagecrew.profiles import ProfileError, discover_profile_catalog

        winners: dict[str, Path | None] = {}
        try:
            catalog = discover_profile_catalog(self.root, user_config_dir(), home=self.home)
            winners = {name: p.source for name, p in catalog.profiles.items()}
            extra_notices = catalog.notices
        except ProfileError as exc:
            self.warn([f"{exc} (stagecrew's own profile; Claude Code agents still listed)"])
            extra_notices = []
        for scope, directory in claude_agent_dirs(self.root, self.home).items():
            found = load_claude_agents(directory, scope)
            self.warn(found.notices)
            for agent in found.agents:
                self.agent(agent, winners.get(agent.name, agent.source))
        self.warn(extra_notices)  # names defined twice (after the files' own lines)

    def agent(self, agent: ClaudeAgent, winner: Path | None) -> None:
        maps_to = f"profile '{agent.name}', {_model_mapping(agent)}"
        tools = "every tool" if agent.tools == "*" else ", ".join(agent.tools) or "no tools"
        maps_to += f"; tools: {tools}"
        if winner is not None and Path(winner) != agent.source:
            maps_to = f"replaced by the profile {self.label(winner)}"
        if agent.scope == "project":
            self.setup.agents.append(agent)
        details = {
            "description": agent.description,
            "source_model": agent.source_model,
            "role": agent.role,
            "model": agent.model,
            "tools": agent.tools,
        }
        self.add("agent", agent.name, self.label(agent.source), agent.scope, maps_to, **details)

    def mcp(self) -> None:
        """``.mcp.json``: each server validated as written (``${VAR}`` kept, never expanded)."""
        from stagecrew.mcp.files import SERVERS_KEY, project_mcp_path, read_json_object

        path = project_mcp_path(self.root)
        try:
            data = read_json_object(path)
        except ConfigError as exc:
            self.warn([f"{exc}; its MCP servers are not read"])
            return
        if data is None:
            return
        servers = data.get(SERVERS_KEY, {})
        if not isinstance(servers, dict):
            kind = type(servers).__name__
            self.warn([f"{path}: '{SERVERS_KEY}' should be an object of servers, got {kind}"])
            return
        for name, entry in servers.items():
            self.mcp_server(path, str(name), entry)

    def mcp_server(self, path: Path, name: str, entry: Any) -> None:
        from stagecrew.mcp.config import check_entry, entry_keys

        label = self.label(path)
        try:
            server = check_entry(name, entry, str(path))
        except ConfigError as exc:
            self.warn([f"{exc}; server not read"])
            return
        where = f"{label}: 'mcpServers.{name}"
        unknown = sorted(set(entry) - entry_keys())
        self.setup.unsupported += [f"{where}.{key}': not used by stagecrew" for key in unknown]
        self.warn(self.unset_variables(entry, where))
        if server.cwd and not _cwd_is_there(server.cwd, self.root):
            self.warn([f"{path}: 'mcpServers.{name}.cwd': {server.cwd}: no such directory"])
        self.setup.mcp_servers[name] = {k: v for k, v in entry.items() if k in entry_keys()}
        details = {
            "transport": server.transport,
            "target": server.target(),
            "env": sorted(server.env),
            "headers": sorted(server.headers),
        }
        maps_to = "started with each session; ${VAR} filled in from the environment then"
        self.add("mcp_server", name, label, "project", maps_to, **details)

    def unset_variables(self, entry: Mapping[str, Any], where: str) -> list[str]:
        """One line per ``${VAR}`` (without a default) whose variable is not set: a session
        stops with an error until it is. Only the name is shown, never a value."""
        from stagecrew.mcp.config import variable_references

        lines = []
        for key, value in _strings(entry):
            for var, default in variable_references(value):
                if default is None and var not in self.environ:
                    lines.append(
                        f"{where}.{key}' uses ${{{var}}}, which is not set: sessions stop with "
                        f"an error until it is (or write ${{{var}:-default}})"
                    )
        return lines

    def settings(self) -> list[tuple[SettingsFile, dict[str, Any]]]:
        """The settings files that are there and readable (one that is not is a warning: its
        rules, hooks, env and model are not read; the other files still are)."""
        out = []
        for settings in settings_files(self.root, self.home):
            try:
                data = read_settings(settings.path)
            except ConfigError as exc:
                self.warn([f"{exc}; its permissions, hooks, env and model are not read"])
                continue
            if data is None:
                continue
            out.append((settings, data))
            unused = sorted(set(data) - _USED_SETTINGS_KEYS)
            if unused:
                keys = ", ".join(unused)
                self.setup.unsupported.append(f"{settings.label}: {keys}: not used by stagecrew")
        return out

    def permissions(self, settings: SettingsFile, data: dict[str, Any]) -> None:
        if "permissions" not in data:
            return
        found = translate_permissions(data["permissions"], settings)
        self.warn(found.notices)
        for _path, key in found.ignored:
            self.setup.unsupported.append(f"{settings.label}: '{key}': not used by stagecrew")
        self.warn(self.missing_directories(settings, data["permissions"]))
        for action, rules in found.by_action().items():
            for rule in rules:
                maps_to = "read as is: Claude Code's syntax, deny > ask > allow"
                where = (settings.label, settings.scope)
                self.add("permission_rule", rule.rule, *where, maps_to, action=action)
                if settings.scope != "user":
                    self.setup.rules.append(rule)

    def missing_directories(self, settings: SettingsFile, permissions: Any) -> list[str]:
        """``additionalDirectories`` entries that are not there (stagecrew ignores the key, but a
        missing directory is worth knowing about before leaving Claude Code)."""
        if not isinstance(permissions, dict):
            return []
        entries = permissions.get("additionalDirectories")
        if not isinstance(entries, list):
            return []
        home = self.home or self.root
        base = self.root if settings.scope != "user" else home
        lines = []
        for entry in entries:
            if not isinstance(entry, str):
                continue
            path = home / entry[2:] if entry.startswith("~/") else base / entry
            if not path.is_dir():
                key = "permissions.additionalDirectories"
                lines.append(f"{settings.path}: '{key}': {entry}: no such directory")
        return lines

    def hooks(self, settings: SettingsFile, data: dict[str, Any]) -> None:
        from stagecrew.hooks.config import parse_hooks

        if "hooks" not in data:
            return
        try:
            parsed = parse_hooks(data["hooks"], settings.label)
        except ConfigError as exc:
            self.warn([f"{exc}; the hooks of this file are not read"])
            return
        self.setup.unsupported += parsed.warnings
        for event, groups in parsed.events.items():
            for group in groups:
                for hook in group.hooks:
                    details = {"matcher": group.matcher.text or "*", "command": hook.command}
                    where = (settings.label, settings.scope)
                    self.add("hook", event, *where, "runs as in Claude Code", **details)
        if settings.scope != "user":
            self.setup.hooks.append((settings.label, data["hooks"]))

    def env_and_model(self, settings: SettingsFile, data: dict[str, Any]) -> None:
        """``env`` (names only: a value is never read out) and ``model``: both unsupported,
        since stagecrew's models and variables come from its config and the shell."""
        env = data.get("env")
        if env is not None and not isinstance(env, dict):
            self.warn([f"{settings.path}: 'env' should be an object of variables; ignored"])
        elif env:
            for name in env:
                where = (settings.label, settings.scope)
                self.add("env", str(name), *where, "not used: export it in your shell")
            names = ", ".join(str(n) for n in env)
            self.setup.unsupported.append(
                f"{settings.label}: 'env' ({names}): stagecrew sets no variables from settings; "
                "export them in your shell"
            )
        model = data.get("model")
        if model is None:
            return
        text = str(model).strip()
        if not _known_model(text):
            expected = "opus, sonnet, haiku, a claude-* model id or a litellm model string"
            self.warn([f"{settings.path}: 'model': unknown model alias {text!r} ({expected})"])
        maps_to = "not used: stagecrew's model is models.primary in its config"
        self.add("model", text, settings.label, settings.scope, maps_to)
        self.setup.unsupported.append(
            f"{settings.label}: 'model: {text}': stagecrew's model is models.primary in its "
            "config (a litellm model string)"
        )


def read_claude_setup(
    project_root: Path,
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClaudeSetup:
    """The Claude Code setup of ``project_root`` and of the person (``home`` holds
    ``~/.claude``; default ``~``). ``environ`` is only asked whether a variable is set
    (default ``os.environ``). Never raises for a file's content, and runs nothing."""
    home = default_home() if home is None else home
    environ = os.environ if environ is None else environ
    return _Reader(project_root, home, environ).read()


def _is_claude_instruction(label: Path) -> bool:
    return label.name in ("CLAUDE.md", "CLAUDE.local.md") or ".claude" in label.parts


def _supporting_files(folder: Path) -> list[Path]:
    """A skill's files besides ``SKILL.md`` (hidden ones left out)."""
    out = []
    for here, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(here, name)
            if not name.startswith(".") and path != folder / "SKILL.md":
                out.append(path)
    return out


def _strings(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key path, text)`` of every string an MCP entry would expand variables in."""
    out: list[tuple[str, str]] = []
    for key in ("command", "url", "cwd"):
        if isinstance(entry.get(key), str):
            out.append((key, entry[key]))
    args = entry.get("args")
    if isinstance(args, list):
        out += [(f"args.{i}", a) for i, a in enumerate(args) if isinstance(a, str)]
    for key in ("env", "headers"):
        values = entry.get(key)
        if isinstance(values, dict):
            out += [(f"{key}.{k}", v) for k, v in values.items() if isinstance(v, str)]
    return out


def _cwd_is_there(cwd: str, root: Path) -> bool:
    """Whether a server's ``cwd`` is there (one holding a ``${VAR}`` is judged at start)."""
    if "${" in cwd:
        return True
    return (Path(cwd) if os.path.isabs(cwd) else root / cwd).is_dir()


def _known_model(text: str) -> bool:
    alias = text.lower()
    return alias in _KNOWN_MODELS or alias.startswith("claude-") or "/" in text


def _model_mapping(agent: ClaudeAgent) -> str:
    """How an agent's ``model`` maps, in a few words."""
    alias = agent.source_model
    if alias is None:
        return "no model → the parent's model"
    if agent.role is not None:
        return f"model {alias} → role {agent.role}"
    if agent.model is not None:
        return f"model {alias}"
    if alias.lower() == "inherit":
        return "model inherit → the parent's model"
    return f"model {alias}: unknown alias → the parent's model"


# ----------------------------------------------------------------------------- translating


def translate_rule(rule: ClaudeRule, source: str = CONFIG_LABEL) -> tuple[list[str], str]:
    """One Claude Code rule as rule strings of ``.stagecrew/config.json``, and a note.

    stagecrew's own syntax when it means exactly the same (``Bash(npm run test:*)`` is
    ``bash(npm run test *)``, a bare ``Read`` is ``read``, ``grep``, ``glob`` and ``ls``):
    the note is then ``""``. Otherwise the rule stays in Claude Code's syntax, marked as coming
    from ``source`` (the engine reads it with Claude Code's meaning, and a leading ``/`` still
    anchors at the project), and the note says why."""
    from stagecrew.tools.permissions import FILE_TOOLS, claude_rule_tools, parse_rule

    parsed = parse_rule(str(rule))
    native = _native_rules(rule.action, parsed.tool, parsed.pattern)
    if native is not None:
        return native, ""
    why = "its pattern has no exact stagecrew form"
    if claude_rule_tools(parsed.tool) & FILE_TOOLS:
        why = "its path matching (gitignore's, anchored at the project) has no stagecrew form"
    return [f"{rule.action} {rule.rule} from {source}"], f"kept in Claude Code's syntax: {why}"


def _native_rules(action: str, tool: str, spec: str | None) -> list[str] | None:
    """stagecrew rules matching exactly the calls the Claude Code rule matches; None when
    there are none."""
    from stagecrew.tools.permissions import claude_rule_tools

    if tool.startswith("mcp__"):
        if spec is not None:
            return None
        name = tool.lower()
        whole_server = name.count("__") == 1 and "*" not in name
        return [f"{action} {name}__*" if whole_server else f"{action} {name}"]
    tools = sorted(claude_rule_tools(tool, action))
    if not tools:
        return None
    if spec is None:
        return [f"{action} {t}" for t in tools]
    pattern = _native_bash(spec) if tool == "Bash" else None
    if tool == "WebFetch":
        pattern = _native_domain(spec)
    return None if pattern is None else [f"{action} {t}({pattern})" for t in tools]


def _native_bash(spec: str) -> str | None:
    """A ``Bash(...)`` specifier as a stagecrew bash pattern with the same matches.

    stagecrew's ``*`` and ``?`` are wildcards and a trailing `` *`` is always optional;
    Claude Code's ``prefix:*`` is the prefix alone or followed by a space (stagecrew's
    ``prefix *``), its ``?`` is a character, ``\\*`` a literal star, and its trailing `` *``
    is optional only when it is the one star."""
    if spec.endswith(":*") and len(spec) > 2:
        prefix = spec[:-2]
        if prefix != prefix.strip() or "*" in prefix or "?" in prefix:
            return None
        return f"{prefix} *"
    if "\\" in spec or "?" in spec:
        return None
    if spec.endswith(" *") and spec.count("*") > 1:
        return None
    return spec


def _native_domain(spec: str) -> str | None:
    """``domain:example.com`` as stagecrew's webfetch host glob (same match, case folded)."""
    host = spec.removeprefix("domain:").strip()
    return None if not host or "/" in host or not spec.startswith("domain:") else host


def _profile_text(agent: ClaudeAgent, source: str) -> str:
    """An agent as a stagecrew profile file: front matter, then its prompt."""
    fields: dict[str, Any] = {"description": agent.description}
    if agent.role is not None:
        fields["role"] = agent.role
    elif agent.model is not None:
        fields["model"] = agent.model
    if agent.tools != "*":
        fields["tools"] = list(agent.tools)
    if agent.permissions:
        fields["permissions"] = list(agent.permissions)
    if agent.max_steps is not None:
        fields["max_steps"] = agent.max_steps
    if agent.read_only:
        fields["read_only"] = True
    model = f" (model: {agent.source_model})" if agent.source_model else ""
    header = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=1000)
    origin = f"# imported from {source} by crew import claude{model}"
    return f"---\n{origin}\n{header}---\n{agent.system_prompt}"


def _profile_note(agent: ClaudeAgent) -> str:
    """What running as a stagecrew profile changes for an agent's model, if anything."""
    if agent.role == "primary":
        return (
            "as a subagent a stagecrew profile with role primary runs on models.subagent; "
            "the Claude Code file ran it on the primary model"
        )
    if agent.role is None and agent.model is None:
        return (
            "stagecrew profiles cannot inherit the parent's model: as a subagent it runs on "
            "models.subagent"
        )
    return ""


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Planned:
    """One whole file ``--write`` creates, and what it is (``command /review``)."""

    path: Path
    content: bytes
    what: str


@dataclass
class WritePlan:
    """What ``--write`` writes: whole files, additions to ``config.json``, and notes on how
    things were translated and what stays behind."""

    files: list[Planned] = field(default_factory=list)
    permissions: list[str] = field(default_factory=list)
    hooks: dict[str, list[Any]] = field(default_factory=dict)
    mcp_servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def config_additions(self) -> bool:
        return bool(self.permissions or self.hooks or self.mcp_servers)


@dataclass(frozen=True)
class Written:
    """What ``--write`` did with one file (``path`` relative to the project)."""

    path: str
    status: Status
    what: str
    detail: str = ""
    # Something of this file's share was left out because something else was there already
    # (an updated config.json that kept a differently configured server).
    partial: bool = False

    @property
    def incomplete(self) -> bool:
        """Whether the person must look: a file kept or failed, or a change left out."""
        return self.partial or self.status in ("kept", "failed")

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "what": self.what,
            "detail": self.detail,
            "partial": self.partial,
        }


def write_plan(setup: ClaudeSetup) -> WritePlan:
    """The project's part of ``setup`` translated for ``.stagecrew/`` (nothing written yet)."""
    plan = WritePlan()
    root = setup.project_root
    target = project_dir(root)
    for command in setup.commands:
        rel = Path(command.source).relative_to(root / ".claude" / "commands")
        dest = target / "commands" / rel
        _plan_copy(plan, Path(command.source), dest, f"command {command.slash}")
    for skill in setup.skills:
        folder = Path(skill.source).parent
        for path in [Path(skill.source), *_supporting_files(folder)]:
            dest = target / "skills" / folder.name / path.relative_to(folder)
            _plan_copy(plan, path, dest, f"skill {skill.name}")
    for agent in setup.agents:
        _plan_agent(plan, agent, target, _rel(root, agent.source))
    _plan_rules(plan, setup.rules)
    for _source, hooks in setup.hooks:
        for event, groups in hooks.items():
            plan.hooks.setdefault(str(event), []).extend(groups)
    plan.mcp_servers = dict(setup.mcp_servers)
    _plan_notes(plan, setup)
    return plan


def _rel(root: Path, path: Path) -> str:
    p = Path(os.path.abspath(path))
    return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)


def _plan_copy(plan: WritePlan, source: Path, dest: Path, what: str) -> None:
    if source.is_symlink() or not source.is_file():
        plan.notes.append(f"{source}: not a regular file; not copied")
        return
    try:
        plan.files.append(Planned(dest, source.read_bytes(), what))
    except OSError as exc:
        plan.notes.append(f"{source}: cannot read ({exc.strerror}); not copied")


def _plan_agent(plan: WritePlan, agent: ClaudeAgent, target: Path, source: str) -> None:
    from stagecrew.profiles import ProfileError, parse_profile

    if not _SAFE_NAME.match(agent.name):
        plan.notes.append(f"{source}: agent name {agent.name!r} is no file name; not written")
        return
    dest = target / "agents" / f"{agent.name}.md"
    text = _profile_text(agent, source)
    try:
        parse_profile(text, agent.name, dest)  # what is written must load as a profile
    except ProfileError as exc:
        plan.notes.append(f"{source}: not written: {exc}")
        return
    plan.files = [f for f in plan.files if f.path != dest]  # a later file of the name wins
    plan.files.append(Planned(dest, text.encode("utf-8"), f"agent {agent.name}"))
    note = _profile_note(agent)
    if note:
        plan.notes.append(f"agent {agent.name}: {note}")


def _plan_rules(plan: WritePlan, rules: list[ClaudeRule]) -> None:
    """Rules in allow, ask, deny order: stagecrew's last match then decides as Claude Code's
    deny > ask > allow does."""
    native_deny = False
    for action in _ACTION_ORDER:
        for rule in (r for r in rules if r.action == action):
            strings, note = translate_rule(rule)
            plan.permissions += [s for s in strings if s not in plan.permissions]
            if note:
                plan.notes.append(f"{action} {rule.rule}: {note}")
            native_deny = native_deny or (action == "deny" and not note)
    if native_deny:
        plan.notes.append(
            "deny rules in stagecrew's syntax can be refined by a later layer (an agent "
            "profile's rules), where a Claude Code deny is final"
        )


def _plan_notes(plan: WritePlan, setup: ClaudeSetup) -> None:
    """What stays behind, said once each."""
    if setup.of_kind("instruction"):
        plan.notes.append(
            "instruction files are not copied: stagecrew reads CLAUDE.md, CLAUDE.local.md, "
            ".claude/CLAUDE.md and .claude/rules/ where they are (keep them, or move their "
            "text into AGENTS.md)"
        )
    if any(item.scope == "user" for item in setup.items):
        plan.notes.append("user-level items (~/.claude) are not copied; stagecrew reads them there")
    if any(rule.source.endswith("settings.local.json") for rule in setup.rules) or any(
        source.endswith("settings.local.json") for source, _ in setup.hooks
    ):
        plan.notes.append(
            ".claude/settings.local.json is yours alone; what it holds now goes into "
            f"{CONFIG_LABEL}, which your team may share"
        )
    if setup.of_kind("env") or setup.of_kind("model"):
        plan.notes.append("env and model are not written (stagecrew has no settings for them)")


def apply_plan(plan: WritePlan, project_root: Path, *, dry_run: bool = False) -> list[Written]:
    """Write ``plan`` under ``project_root`` without replacing anything (module docstring);
    with ``dry_run`` only say what would happen."""
    root = Path(os.path.realpath(project_root))
    out = [_write_new(f, root, dry_run) for f in plan.files]
    if plan.config_additions:
        out.append(_merge_config(plan, root, dry_run))
    return out


def _write_new(planned: Planned, root: Path, dry_run: bool) -> Written:
    rel = _rel(root, planned.path)
    if planned.path.exists() or planned.path.is_symlink():
        try:
            same = planned.path.is_file() and planned.path.read_bytes() == planned.content
        except OSError:
            same = False
        if same:
            return Written(rel, "unchanged", planned.what)
        return Written(rel, "kept", planned.what, "exists and differs; not overwritten")
    if dry_run:
        return Written(rel, "created", planned.what)
    try:
        planned.path.parent.mkdir(parents=True, exist_ok=True)
        with open(planned.path, "xb") as fh:  # "x": never replace a file created meanwhile
            fh.write(planned.content)
    except OSError as exc:
        return Written(rel, "failed", planned.what, (exc.strerror or str(exc)).lower())
    return Written(rel, "created", planned.what)


def _merge_config(plan: WritePlan, root: Path, dry_run: bool) -> Written:
    """``config.json`` with what it lacks added; nothing in it is changed or removed."""
    path = config_file(root)
    rel = _rel(root, path)
    what = "permissions, hooks and MCP servers"
    try:
        existing = read_json_file(path)
    except ConfigError as exc:
        return Written(rel, "failed", what, str(exc))
    data: dict[str, Any] = dict(existing or {})
    added: list[str] = []
    kept: list[str] = []
    _merge_permissions(data, plan.permissions, added, kept)
    _merge_hooks(data, plan.hooks, added, kept)
    _merge_servers(data, plan.mcp_servers, added, kept)
    detail = "; ".join(filter(None, ["added " + ", ".join(added) if added else "", *kept]))
    if not added:
        return Written(rel, "kept" if kept else "unchanged", what, detail)
    problem = _check_config(data)
    if problem:
        return Written(rel, "failed", what, problem)
    status: Status = "updated" if existing is not None else "created"
    if not dry_run:
        try:
            _replace_json(path, data)
        except OSError as exc:
            return Written(rel, "failed", what, (exc.strerror or str(exc)).lower())
    return Written(rel, status, what, detail, partial=bool(kept))


def _merge_permissions(
    data: dict[str, Any], rules: list[str], added: list[str], kept: list[str]
) -> None:
    if not rules:
        return
    current = data.get("permissions", [])
    if not isinstance(current, list):
        kept.append("kept 'permissions' (not a list)")
        return
    new = [r for r in rules if r not in current]
    if new:
        data["permissions"] = [*current, *new]
        added.append(f"{len(new)} permission rule{'s' if len(new) != 1 else ''}")


def _merge_hooks(
    data: dict[str, Any], hooks: dict[str, list[Any]], added: list[str], kept: list[str]
) -> None:
    if not hooks:
        return
    current = data.get("hooks", {})
    if not isinstance(current, dict):
        kept.append("kept 'hooks' (not an object)")
        return
    merged = dict(current)
    count = 0
    for event, groups in hooks.items():
        present = merged.get(event, [])
        if not isinstance(present, list):
            kept.append(f"kept 'hooks.{event}' (not a list)")
            continue
        new = [g for g in groups if g not in present]
        if new:
            merged[event] = [*present, *new]
            count += len(new)
    if count:
        data["hooks"] = merged
        added.append(f"{count} hook group{'s' if count != 1 else ''}")


def _merge_servers(
    data: dict[str, Any], servers: dict[str, dict[str, Any]], added: list[str], kept: list[str]
) -> None:
    if not servers:
        return
    mcp = data.get("mcp", {})
    present = mcp.get("servers", {}) if isinstance(mcp, dict) else None
    if not isinstance(present, dict):
        kept.append("kept 'mcp' (not an object with 'servers')")
        return
    merged = dict(present)
    new = []
    for name, entry in servers.items():
        if name not in merged:
            merged[name] = entry
            new.append(name)
        elif merged[name] != entry:
            kept.append(f"kept MCP server '{name}' (configured differently already)")
    if new:
        data["mcp"] = {**mcp, "servers": merged}
        added.append("MCP server" + ("s " if len(new) > 1 else " ") + ", ".join(new))


def _check_config(data: dict[str, Any]) -> str:
    """Why the merged config would not load ("" when it would): checked with the parsers a
    session uses, so ``--write`` never leaves a config that stops the next run."""
    from stagecrew.hooks.config import parse_hooks
    from stagecrew.mcp.config import check_entry
    from stagecrew.tools.permissions import RuleError, parse_rule

    try:
        for rule in data.get("permissions", []):
            parse_rule(rule)
        if "hooks" in data:
            parse_hooks(data["hooks"], CONFIG_LABEL)
        servers = data.get("mcp", {}).get("servers", {})
        for name, entry in servers.items():
            check_entry(name, entry, CONFIG_LABEL, strict=True)
    except (RuleError, ConfigError) as exc:
        return f"not written: {exc}"
    return ""


def _replace_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a crash leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.import-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
