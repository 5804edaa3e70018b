"""From configuration, profile and prompt to an ``AgentSpec`` and the keys it needs.

Everything that can be wrong with a request is found here, before any actor starts: an
unknown agent profile, a model role without its key. The errors are one line each and say
what to set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagecrew.actors.spec import AgentSpec
from stagecrew.config import Config, user_config_dir
from stagecrew.llm.providers import required_key_env
from stagecrew.messages import ActorRole, ModelRole, ModelSpecWire, new_id


class SessionSetupError(Exception):
    """A request that cannot start; the message says how to fix it."""


@dataclass
class PreparedSession:
    spec: AgentSpec
    credentials: dict[str, str]


def credentials_for(
    specs: list[tuple[str, ModelSpecWire]], environ: dict[str, str]
) -> dict[str, str]:
    """The keys the given models need, read from the person's environment by name."""
    creds: dict[str, str] = {}
    for role, spec in specs:
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


def prepare_session(
    config: Config,
    prompt: str,
    workspace: Path,
    *,
    agent: str | None = None,
    session_id: str | None = None,
    environ: dict[str, str] | None = None,
) -> PreparedSession:
    from stagecrew.profiles import ProfileError, discover_profiles

    environ = dict(os.environ) if environ is None else environ
    name = agent or config.agent
    try:
        profiles = discover_profiles(workspace, user_config_dir())
    except ProfileError as exc:
        raise SessionSetupError(str(exc)) from exc
    if name not in profiles:
        known = ", ".join(sorted(profiles))
        raise SessionSetupError(f"unknown agent profile '{name}': known profiles are {known}")
    profile = profiles[name]
    role = ModelRole(profile.role) if profile.role else ModelRole.PRIMARY
    model_cfg = config.models.for_role(role)
    overrides = {}
    if profile.model:
        overrides["model"] = profile.model
    if profile.temperature is not None:
        overrides["temperature"] = profile.temperature
    wire = model_cfg.wire(**overrides)
    fallback = model_cfg.wire(model=model_cfg.fallback) if model_cfg.fallback else None
    needed = [(role.value, wire)] + ([(role.value, fallback)] if fallback else [])
    credentials = credentials_for(needed, environ)
    sid = session_id or new_id()
    max_steps = config.limits.max_steps
    if profile.max_steps is not None:
        max_steps = min(max_steps, profile.max_steps)
    spec = AgentSpec(
        session=sid,
        actor_id=f"{sid}-primary",
        role=ActorRole.PRIMARY,
        model_role=role,
        workspace=str(workspace),
        prompt=prompt,
        profile=name,
        system_prompt=profile.system_prompt,
        tools=None if profile.tools == "*" else list(profile.tools),
        read_only=profile.read_only,
        permissions=[*config.permissions, *profile.permissions],
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
        providers=[*config.providers, *_mcp_providers(config, workspace, environ)],
        hooks=_hook_sources(config, workspace),
        **({"context_window": model_cfg.context_window} if model_cfg.context_window else {}),
    )
    return PreparedSession(spec=spec, credentials=credentials)
