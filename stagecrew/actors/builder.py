"""The session builder: from configuration, profile and prompt to an ``AgentSpec`` and the
keys it needs, below the CLI (which only parses, calls and renders).

Everything that can be wrong with a request is found here, before any actor starts: an
unknown agent profile, a model role without its key, a custom command whose ``!`cmd``` the
rules deny. The errors are one line each and say what to set.

A prompt that is ``/name args`` for a custom command (or a skill the person may invoke) is
expanded here, so ``crew run "/name args"`` and the chat's ``/name args`` mean the same: the
command's text becomes the prompt, its ``allowed-tools`` become allow rules of the run, its
``model`` and ``agent`` choose the model and profile.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stagecrew.actors.mentions import agent_mentions, with_delegation
from stagecrew.actors.spec import AgentSpec
from stagecrew.config import Config, user_config_dir
from stagecrew.llm.providers import endpoint_settings, required_key_env
from stagecrew.messages import ActorRole, ModelRole, ModelSpecWire, new_id

if TYPE_CHECKING:
    from stagecrew.commands import CommandCatalog, Confirm, CustomCommand, Expansion
    from stagecrew.skills import SkillCatalog
    from stagecrew.tools.providers import ProviderSpec


class SessionSetupError(Exception):
    """A request that cannot start; the message says how to fix it."""


@dataclass
class PreparedSession:
    spec: AgentSpec
    credentials: dict[str, str]
    # One line each: files of the person's setup that could not be used (a command or skill
    # with broken front matter), for the caller to show; the session runs without them.
    notices: list[str] = field(default_factory=list)
    # The custom command the prompt named, if it did; ``spec.prompt`` is its expansion.
    command: Expansion | None = None
    # Agents the prompt mentioned (``@name``); ``spec.prompt`` asks for the hand-over.
    mentions: list[str] = field(default_factory=list)


def credentials_for(
    specs: list[tuple[str, ModelSpecWire]], environ: dict[str, str]
) -> dict[str, str]:
    """The keys the given models need, read from the person's environment by name, and the
    provider endpoint variables set there (``OPENAI_BASE_URL``, ...): a session calls the
    endpoint of the command that started it, whatever the head was started with."""
    creds: dict[str, str] = {}
    for role, spec in specs:
        creds.update(endpoint_settings(spec, environ))
        env_name = required_key_env(spec)
        if env_name is None:
            continue
        value = environ.get(env_name)
        if not value:
            raise SessionSetupError(
                f"model role '{role}' ({spec.model}) needs an API key: set {env_name} "
                f"(or point models.{role}.api_key_env at the variable that holds it)"
            )
        creds[env_name] = value
    return creds


def keys_for_roles(
    config: Config, roles: list[ModelRole], environ: dict[str, str]
) -> dict[str, str]:
    """The keys the extra model roles of a session need (the judge of ``--goal``, Max Mode's
    candidates, each configured candidate model): they may use other providers than the
    primary model. Raises ``SessionSetupError`` naming the missing variable."""
    needed = [(r.value, config.models.for_role(r).wire()) for r in dict.fromkeys(roles)]
    if ModelRole.CANDIDATE in roles:
        needed += [("candidate", m.wire()) for m in config.models.candidates]
    return credentials_for(needed, environ)


def _layer_pair(config: Config, key: str) -> tuple[tuple[str, Any] | None, tuple[str, Any] | None]:
    """``key``'s value in the user's and in the project's config file, with their paths (the
    keys whose sources all count, hooks and MCP servers, read the layers one by one)."""
    user_file = str(user_config_dir() / "config.json")
    layers = config.layer_values(key)
    user = next(((s, v) for s, v in layers if s == user_file), None)
    project = next(((s, v) for s, v in layers if s != user_file), None)
    return user, project


def _mcp_providers(config: Config, workspace: Path, environ: dict[str, str]) -> list[Any]:
    """The session's MCP servers (``.mcp.json`` and the ``mcp`` keys, ``${VAR}`` expanded in
    the person's environment) as one provider; none configured, none."""
    from stagecrew.mcp.config import load_mcp_config
    from stagecrew.mcp.provider import provider_spec

    user, project = _layer_pair(config, "mcp")
    mcp = load_mcp_config(
        workspace,
        user=user[1] if user else None,
        project=project[1] if project else None,
        environ=environ,
        user_source=user[0] if user else None,
        project_source=project[0] if project else None,
    )
    spec = provider_spec(mcp)
    return [spec] if spec is not None else []


def _hook_sources(config: Config, workspace: Path) -> list[tuple[str, dict[str, Any]]]:
    """The session's hooks, validated now (a bad file is a config error before anything
    starts): Claude Code's settings files and stagecrew's own ``hooks`` keys, in order."""
    from stagecrew.hooks import hook_sources

    user, project = _layer_pair(config, "hooks")
    return [
        (source, dict(hooks))
        for source, hooks in hook_sources(workspace, user_hooks=user, project_hooks=project)
    ]


@dataclass
class CustomSetup:
    """The person's and the project's skills and custom commands (one scan for both)."""

    skills: SkillCatalog
    commands: CommandCatalog

    @property
    def notices(self) -> list[str]:
        return [str(p) for p in [*self.skills.problems, *self.commands.problems]]

    def problem_for(self, name: str) -> str | None:
        """Why ``/name`` is no command when a file meant to be it could not be used (a
        ``/name`` that meets a broken file must say so, not go to the model as text)."""
        name = name.removeprefix("/")
        if name in self.commands.commands:
            return None
        problems = [*self.commands.problems, *self.skills.problems]
        return next((str(p) for p in problems if p.name == name), None)


def custom_setup(workspace: Path, home: Path | None = None) -> CustomSetup:
    """Skills and custom commands visible from ``workspace``; ``home`` holds ``~/.claude``
    (the person's home unless a caller, e.g. a test, names another)."""
    from stagecrew.commands import discover_commands
    from stagecrew.skills import discover_skills

    if home is None:
        try:
            home = Path.home()
        except RuntimeError:  # no HOME and no passwd entry: no user-level files
            home = None
    config_dir = user_config_dir()
    skills = discover_skills(workspace, user_config_dir=config_dir, home=home)
    commands = discover_commands(workspace, user_config_dir=config_dir, home=home, skills=skills)
    return CustomSetup(skills=skills, commands=commands)


def _skills_provider(setup: CustomSetup) -> list[ProviderSpec]:
    """The ``skill`` tool over the skills the model may load; none, no tool."""
    from stagecrew.skills.provider import provider_spec

    spec = provider_spec(setup.skills.for_model())
    return [spec] if spec is not None else []


def with_skills_section(
    system_prompt: str, providers: list[ProviderSpec], tools: list[str] | None
) -> str:
    """The profile's prompt plus the "Skills" section, when the agent has the ``skill`` tool
    (a profile whose ``tools`` leave it out is not told about skills it cannot load)."""
    from stagecrew.skills.provider import TOOL_NAME, skills_section

    if tools is not None and TOOL_NAME not in tools:
        return system_prompt
    section = skills_section(providers)
    return f"{system_prompt.rstrip()}\n\n{section}\n" if section else system_prompt


def _expand(
    command: CustomCommand,
    arguments: str,
    workspace: Path,
    rules: list[str],
    ask_policy: Literal["ask", "allow", "deny"],
    confirm: Confirm | None,
) -> Expansion:
    """The command expanded under the run's rules (its own pre-approvals included)."""
    from stagecrew.commands import CommandExpansionError, expand_command
    from stagecrew.tools.permissions import DEFAULT_RULES, PermissionChecker

    checker = PermissionChecker([*DEFAULT_RULES, *rules], ask_policy=ask_policy)
    try:
        return expand_command(command, arguments, workspace, checker=checker, confirm=confirm)
    except CommandExpansionError as exc:
        raise SessionSetupError(str(exc)) from exc


def _command_model(model: str, config: Config) -> str:
    """A command's ``model``: Claude Code's aliases (``opus``, ``sonnet``, ``haiku``) name
    the model of the role that plays that part here, as for Claude-format agents; anything
    else is a litellm model string."""
    from stagecrew.claude.agents import MODEL_ROLES

    role = MODEL_ROLES.get(model.strip().lower())
    return config.models.for_role(ModelRole(role)).model if role else model


def profile_model_overrides(profile: Any) -> dict[str, Any]:
    """What a profile changes in the model it runs on (its own model, its temperature)."""
    overrides: dict[str, Any] = {}
    if profile.model:
        overrides["model"] = profile.model
    if profile.temperature is not None:
        overrides["temperature"] = profile.temperature
    return overrides


def profile_max_steps(limit: int, profile: Any) -> int:
    return limit if profile.max_steps is None else min(limit, profile.max_steps)


def prepare_session(
    config: Config,
    prompt: str,
    workspace: Path,
    *,
    agent: str | None = None,
    session_id: str | None = None,
    environ: dict[str, str] | None = None,
    expand_commands: bool = True,
    confirm: Confirm | None = None,
    setup: CustomSetup | None = None,
) -> PreparedSession:
    """The spec of a session (or of the next run of a chat). ``expand_commands``: a
    ``/name args`` prompt naming a custom command is that command (the chat turns it off for
    a ``//`` line). ``confirm`` asks the person about a ``!`cmd``` an ``ask`` rule covers;
    without it the ask policy decides. ``setup``: the skills and commands a caller just
    scanned (the chat, once per line), else scanned here."""
    from stagecrew.claude.permissions import load_claude_permissions
    from stagecrew.commands import split_invocation
    from stagecrew.profiles import ProfileError, discover_profile_catalog

    environ = dict(os.environ) if environ is None else environ
    setup = setup or custom_setup(workspace)
    invocation = setup.commands.match(prompt) if expand_commands else None
    command = invocation[0] if invocation else None
    named = split_invocation(prompt) if expand_commands else None
    broken = setup.problem_for(named[0]) if named else None
    if broken is not None:
        raise SessionSetupError(broken)
    name = (command.agent if command else None) or agent or config.agent
    try:
        catalog = discover_profile_catalog(workspace, user_config_dir())
    except ProfileError as exc:
        raise SessionSetupError(str(exc)) from exc
    profiles = catalog.profiles
    claude = load_claude_permissions(workspace)
    if name not in profiles:
        known = ", ".join(sorted(profiles))
        where = f"{command.slash} ({command.source}) names " if command and command.agent else ""
        raise SessionSetupError(
            f"{where}unknown agent profile '{name}': known profiles are {known}"
        )
    profile = profiles[name]
    role = ModelRole(profile.role) if profile.role else ModelRole.PRIMARY
    model_cfg = config.models.for_role(role)
    overrides = profile_model_overrides(profile)
    if command and command.model:
        overrides["model"] = _command_model(command.model, config)
    wire = model_cfg.wire(**overrides)
    fallback = model_cfg.wire(model=model_cfg.fallback) if model_cfg.fallback else None
    needed = [(role.value, wire)] + ([(role.value, fallback)] if fallback else [])
    credentials = credentials_for(needed, environ)
    # A command's pre-approvals come before the person's and the profile's rules: they lift
    # the shipped asks for this run, never a rule someone wrote (the last match wins).
    permissions = [
        *(command.allow_rules if command else ()),
        *claude.rule_strings(),
        *config.permissions,
    ]
    permissions += profile.permissions
    expansion = None
    if invocation is not None and command is not None:
        expansion = _expand(
            command, invocation[1], workspace, permissions, config.ask_policy, confirm
        )
        prompt = expansion.text
    # Subagents may be mentioned: Claude Code's agents and stagecrew profiles that are not a
    # primary agent (build, plan) — Tab and /agent switch those.
    delegates = [
        n
        for n, p in profiles.items()
        if n != name and (p.source_format == "claude" or p.role != ModelRole.PRIMARY.value)
    ]
    mentioned = agent_mentions(prompt, delegates, workspace)
    prompt = with_delegation(prompt, mentioned)
    sid = session_id or new_id()
    max_steps = profile_max_steps(config.limits.max_steps, profile)
    tools = None if profile.tools == "*" else list(profile.tools)
    providers = [
        *config.providers,
        *_mcp_providers(config, workspace, environ),
        *_skills_provider(setup),
    ]
    spec = AgentSpec(
        session=sid,
        actor_id=f"{sid}-primary",
        role=ActorRole.PRIMARY,
        model_role=role,
        workspace=str(workspace),
        prompt=prompt,
        profile=name,
        system_prompt=with_skills_section(profile.system_prompt, providers, tools),
        tools=tools,
        read_only=profile.read_only,
        permissions=permissions,
        ask_policy=config.ask_policy,
        model=wire,
        fallback_model=fallback,
        max_steps=max_steps,
        wall_time_s=config.limits.agent_wall_time_s or config.limits.wall_time_s,
        max_tokens=config.limits.max_tokens,
        max_cost_usd=config.limits.max_cost_usd,
        max_format_failures=config.limits.max_format_failures,
        stuck=config.limits.stuck,
        role_models={r.value: config.models.for_role(r).wire() for r in ModelRole},
        user_config_dir=str(user_config_dir()),
        max_depth=config.limits.max_subagent_depth,
        providers=providers,
        hooks=_hook_sources(config, workspace),
        tool_env_passthrough=list(config.tools.env_passthrough),
        sandbox=config.sandbox,
        cc_index=config.memory.cc_index,
        **({"context_window": model_cfg.context_window} if model_cfg.context_window else {}),
    )
    return PreparedSession(
        spec=spec,
        credentials=credentials,
        notices=[*setup.notices, *catalog.notices, *claude.notices],
        command=expansion,
        mentions=mentioned,
    )


# -- subagents: a parent's spec becomes a child's ---------------------------------------------
#
# Plain and deterministic, so the Ray host and in-process tests build children the same way.
# A child never has more power than its parent: a read-only parent has read-only children, the
# parent's permission rules come first (the child's profile can only add), and the tree's depth
# is bounded so an agent cannot recurse into an unbounded fan-out.


class SubagentError(Exception):
    """A subagent that cannot be started; the message goes back to the parent model."""


def _profiles(workspace: Path, user_dir: Path | None) -> dict[str, Any]:
    """Profiles, parsed once per change of the directories that hold them (a fan-out of
    subagents would otherwise re-read and re-parse every markdown file per child)."""

    def stamp(d: Path | None) -> tuple[float, ...]:
        if d is None or not d.is_dir():
            return ()
        return (*tuple(sorted(p.stat().st_mtime for p in d.glob("*.md"))), d.stat().st_mtime)

    from stagecrew.profiles import profile_dirs

    key = (workspace, user_dir, *(stamp(d) for d in profile_dirs(workspace, user_dir)))
    return _cached_profiles(key)


@functools.lru_cache(maxsize=8)
def _cached_profiles(key: tuple[Any, ...]) -> dict[str, Any]:
    from stagecrew.profiles import discover_profiles

    return discover_profiles(key[0], key[1])


def child_spec(parent: AgentSpec, prompt: str, profile_name: str) -> AgentSpec:
    from stagecrew.profiles import ProfileError

    if parent.depth + 1 > parent.max_depth:
        raise SubagentError(
            f"subagents may nest {parent.max_depth} levels deep; do this task yourself"
        )
    user_dir = Path(parent.user_config_dir) if parent.user_config_dir else None
    try:
        profiles = _profiles(Path(parent.workspace), user_dir)
    except ProfileError as exc:
        raise SubagentError(str(exc)) from exc
    profile = profiles.get(profile_name)
    if profile is None:
        raise SubagentError(
            f"unknown agent profile '{profile_name}'; known: {', '.join(sorted(profiles))}"
        )
    model = profile.child_model(parent.model, parent.role_models)
    model = model.model_copy(update=profile_model_overrides(profile))
    max_steps = profile_max_steps(parent.max_steps, profile)
    tools = None if profile.tools == "*" else list(profile.tools)
    return parent.model_copy(
        update={
            "actor_id": f"{parent.session}-sa-{new_id()[:6]}",
            "role": ActorRole.SUBAGENT,
            "model_role": ModelRole.SUBAGENT,
            "parent": parent.actor_id,
            "prompt": prompt,
            "profile": profile_name,
            "system_prompt": with_skills_section(profile.system_prompt, parent.providers, tools),
            "tools": tools,
            "read_only": parent.read_only or profile.read_only,
            "permissions": [*parent.permissions, *profile.permissions],
            "model": model,
            "max_steps": max_steps,
            "messages": [],
            "depth": parent.depth + 1,
            "goal_spec": None,  # the person's goal is the parent's to meet, not each child's
        }
    )
