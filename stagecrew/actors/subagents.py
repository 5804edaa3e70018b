"""How a parent agent's spec becomes a subagent's: profile, model, permissions, depth.

Plain and deterministic, so the Ray host and in-process tests build children the same way.
A child never has more power than its parent: a read-only parent has read-only children, the
parent's permission rules come first (the child's profile can only add), and the tree's depth
is bounded so an agent cannot recurse into an unbounded fan-out.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from stagecrew.actors.spec import AgentSpec
from stagecrew.messages import ActorRole, ModelRole, new_id


class SubagentError(Exception):
    """A subagent that cannot be started; the message goes back to the parent model."""


def _profiles(workspace: Path, user_dir: Path | None) -> dict[str, Any]:
    """Profiles, parsed once per change of the directories that hold them (a fan-out of
    subagents would otherwise re-read and re-parse every markdown file per child)."""

    def stamp(d: Path | None) -> tuple[float, ...]:
        if d is None or not d.is_dir():
            return ()
        return (*tuple(sorted(p.stat().st_mtime for p in d.glob("*.md"))), d.stat().st_mtime)

    key = (
        workspace,
        user_dir,
        stamp(workspace / ".stagecrew" / "agents"),
        stamp(user_dir and user_dir / "agents"),
    )
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
    model = parent.role_models.get(ModelRole.SUBAGENT.value, parent.model)
    # `role: primary` in a profile means "the main model" for a top-level agent; as a child it
    # is a subagent. Only another role (judge, checkpoint, candidate) redirects the model.
    if (
        profile.role
        and profile.role != ModelRole.PRIMARY.value
        and profile.role in parent.role_models
    ):
        model = parent.role_models[profile.role]
    if profile.model:
        model = model.model_copy(update={"model": profile.model})
    if profile.temperature is not None:
        model = model.model_copy(update={"temperature": profile.temperature})
    max_steps = (
        parent.max_steps if profile.max_steps is None else min(parent.max_steps, profile.max_steps)
    )
    return parent.model_copy(
        update={
            "actor_id": f"{parent.session}-sa-{new_id()[:6]}",
            "role": ActorRole.SUBAGENT,
            "model_role": ModelRole.SUBAGENT,
            "parent": parent.actor_id,
            "prompt": prompt,
            "profile": profile_name,
            "system_prompt": profile.system_prompt,
            "tools": None if profile.tools == "*" else list(profile.tools),
            "read_only": parent.read_only or profile.read_only,
            "permissions": [*parent.permissions, *profile.permissions],
            "model": model,
            "max_steps": max_steps,
            "messages": [],
            "depth": parent.depth + 1,
            "goal_spec": None,  # the person's goal is the parent's to meet, not each child's
        }
    )
