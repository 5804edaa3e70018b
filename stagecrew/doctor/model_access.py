"""The configuration and the models it names: valid, keyed, reachable.

The configuration is loaded and the session prepared the way ``crew run`` does it (every
layer, the agent profile, hooks, MCP servers, custom commands and skills), so an error here
is the error ``crew run`` would print. Keys are checked by *name* only: values are read to
see that they are set and, for a reachability request, sent to the provider they belong to
(as a session would); they are never printed, logged or returned.

A role whose model is missing a key or out of reach fails when a session needs it to start
or go on (primary, subagent); the judge (``--goal``, Max Mode), the candidates (``--max``) and
the checkpoint writer (which falls back to a summary without a model) only warn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stagecrew.doctor.report import Check, Status, worst
from stagecrew.llm.providers import (
    apply_endpoint,
    endpoint_settings,
    provider_of,
    required_key_env,
)
from stagecrew.messages import ModelRole, ModelSpecWire

if TYPE_CHECKING:
    from stagecrew.config import Config

REACH_TIMEOUT_S = 3.0
REQUIRED_ROLES = frozenset({"primary", "subagent"})
PLACEHOLDER = "crew-doctor-placeholder"

# Where each provider's OpenAI-style model list is, when the config names no api_base;
# the variables litellm reads to move it, first match wins.
# Where each hosted provider answers when no endpoint variable or api_base says otherwise
# (the variables themselves are llm.providers.PROVIDER_ENDPOINT_ENV, as the gateway reads them).
DEFAULT_BASES: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "xai": "https://api.x.ai/v1",
    "together_ai": "https://api.together.xyz/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "ollama": "http://localhost:11434/v1",
    "ollama_chat": "http://localhost:11434/v1",
}


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def config_checks(workspace: Path, environ: Mapping[str, str]) -> tuple[list[Check], Config | None]:
    """The configuration as ``crew run`` loads it, then the session it would prepare."""
    from stagecrew.actors.builder import SessionSetupError, prepare_session
    from stagecrew.config import ConfigError, load_config, user_config_dir
    from stagecrew.layout import config_file

    try:
        config = load_config(workspace, environ=dict(environ))
    except ConfigError as exc:
        return [
            Check(
                "config",
                "fail",
                _one_line(str(exc)),
                "fix the file and key named above (crew run reads the same files)",
            )
        ], None
    files = [f for f in (user_config_dir() / "config.json", config_file(workspace)) if f.exists()]
    sources = ", ".join(str(f) for f in files) or "no config files, the defaults"
    checks = [Check("config", "ok", f"valid: {sources}")]
    # Keys are the next check's business: stand-ins let the setup be checked without them.
    stand_ins = {name: PLACEHOLDER for name in _key_names(config) if not environ.get(name)}
    try:
        prepared = prepare_session(config, "", workspace, environ={**environ, **stand_ins})
    except SessionSetupError as exc:
        checks.append(
            Check("session setup", "fail", _one_line(str(exc)), "fix what the message names")
        )
        return checks, config
    detail = f"agent '{prepared.spec.profile}': profile, hooks, MCP servers, commands, skills load"
    if prepared.notices:
        checks.append(
            Check(
                "session setup",
                "warn",
                f"{detail}; skipped: " + "; ".join(_one_line(n) for n in prepared.notices),
                "fix the files named (a session runs without them)",
            )
        )
    else:
        checks.append(Check("session setup", "ok", detail))
    return checks, config


@dataclass
class _Use:
    """One model as the roles that use it see it."""

    spec: ModelSpecWire
    roles: list[str] = field(default_factory=list)

    @property
    def status_if_broken(self) -> Status:
        """``primary fallback`` counts as its role: a session start checks fallback keys too."""
        needed = any(role.split()[0] in REQUIRED_ROLES for role in self.roles)
        return "fail" if needed else "warn"

    @property
    def who(self) -> str:
        return ", ".join(dict.fromkeys(self.roles))


def model_uses(config: Config) -> list[_Use]:
    """Every model the configuration names (fallbacks and Max Mode's list included), with the
    roles that use it."""
    uses: dict[tuple[str, str | None, str | None], _Use] = {}

    def add(role: str, spec: ModelSpecWire) -> None:
        key = (spec.model, spec.api_base, spec.api_key_env)
        uses.setdefault(key, _Use(spec)).roles.append(role)

    for role in ModelRole:
        model = config.models.for_role(role)
        add(role.value, model.wire())
        if model.fallback:
            add(f"{role.value} fallback", model.wire(model=model.fallback))
    for i, candidate in enumerate(config.models.candidates, 1):
        add(f"candidate {i}", candidate.wire())
    return list(uses.values())


def _key_names(config: Config) -> list[str]:
    return list(dict.fromkeys(n for u in model_uses(config) if (n := required_key_env(u.spec))))


def key_checks(config: Config, environ: Mapping[str, str]) -> list[Check]:
    """One line per key variable: set or not, and for which roles (never its value)."""
    by_name: dict[str, list[_Use]] = {}
    keyless: list[str] = []
    for use in model_uses(config):
        name = required_key_env(use.spec)
        if name is None:
            keyless += use.roles
        else:
            by_name.setdefault(name, []).append(use)
    checks = []
    for name, uses in by_name.items():
        roles = ", ".join(dict.fromkeys(r for u in uses for r in u.roles))
        if environ.get(name):
            checks.append(Check(f"key {name}", "ok", f"set (for {roles})"))
            continue
        status = worst([u.status_if_broken for u in uses])
        first = uses[0]
        role = first.roles[0].split()[0]
        checks.append(
            Check(
                f"key {name}",
                status,
                f"not set: needed by {roles} ({first.spec.model})",
                f"export {name}=… (or point models.{role}.api_key_env at the variable that "
                "holds the key)",
            )
        )
    if keyless:
        checks.append(Check("keys", "ok", f"no key needed for {', '.join(dict.fromkeys(keyless))}"))
    return checks


def endpoint_of(spec: ModelSpecWire, environ: Mapping[str, str]) -> str | None:
    """The base URL requests for ``spec`` go to, or None when it is not known here."""
    applied = apply_endpoint(spec, endpoint_settings(spec, environ))
    if applied.api_base:
        return applied.api_base.rstrip("/")
    return DEFAULT_BASES.get(provider_of(spec.model))


def _headers(spec: ModelSpecWire, environ: Mapping[str, str]) -> dict[str, str]:
    name = required_key_env(spec)
    key = environ.get(name) if name else None
    if not key:
        return {}
    provider = provider_of(spec.model)
    if provider == "anthropic" and not spec.api_base:
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    if provider == "gemini" and not spec.api_base:
        return {"x-goog-api-key": key}
    return {"Authorization": f"Bearer {key}"}


def _probe(url: str, headers: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """``GET url``: the HTTP status, or None and why no answer came."""
    import httpx

    try:
        response = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=True)
    except httpx.TimeoutException:
        return None, f"no answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        return None, _one_line(str(exc)) or type(exc).__name__
    return response.status_code, ""


def reach_checks(
    config: Config, environ: Mapping[str, str], timeout: float = REACH_TIMEOUT_S
) -> list[Check]:
    """One cheap ``GET {base}/models`` per endpoint, all at once (a short timeout each)."""
    endpoints: dict[str, list[_Use]] = {}
    unknown: list[str] = []
    keyless: list[str] = []
    for use in model_uses(config):
        base = endpoint_of(use.spec, environ)
        key = required_key_env(use.spec)
        if key and not environ.get(key) and not use.spec.api_base:
            # A hosted provider without its key: the key line already fails, and a request
            # would only say so again (and leave the machine for nothing).
            keyless.append(f"{use.spec.model} ({use.who})")
        elif base is None:
            unknown.append(f"{use.spec.model} ({use.who})")
        else:
            endpoints.setdefault(base, []).append(use)

    def probe(item: tuple[str, list[_Use]]) -> Check:
        base, uses = item
        headers = _headers(uses[0].spec, environ)
        status, problem = _probe(f"{base}/models", headers, timeout)
        roles = ", ".join(dict.fromkeys(r for u in uses for r in u.roles))
        name = f"provider {base}"
        if status is None:
            role = uses[0].roles[0].split()[0]
            if uses[0].spec.api_base:
                fix = f"start the server at {base}, or fix models.{role}.api_base"
            else:
                fix = "check the network (behind a proxy: HTTPS_PROXY), or set an api_base"
            return Check(
                name,
                worst([u.status_if_broken for u in uses]),
                f"unreachable for {roles}: {problem}",
                fix,
            )
        if status in (401, 403) and headers:
            key = required_key_env(uses[0].spec)
            return Check(
                name,
                worst([u.status_if_broken for u in uses]),
                f"reachable, but the key was refused (HTTP {status}) for {roles}",
                f"check the value of {key}",
            )
        return Check(name, "ok", f"reachable (HTTP {status} for /models) for {roles}")

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(endpoints)))) as pool:
        checks = list(pool.map(probe, endpoints.items()))
    if unknown:
        checks.append(
            Check("providers", "skip", "no known endpoint to try for " + "; ".join(unknown))
        )
    if keyless:
        checks.append(
            Check("providers", "skip", "not tried without their key: " + "; ".join(keyless))
        )
    return checks


def model_checks(workspace: Path, environ: Mapping[str, str] | None = None) -> list[Check]:
    environ = dict(os.environ) if environ is None else environ
    checks, config = config_checks(workspace, environ)
    if config is None:
        return checks
    return [*checks, *key_checks(config, environ), *reach_checks(config, environ)]
