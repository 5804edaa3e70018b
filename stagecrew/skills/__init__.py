"""Skills: ``SKILL.md`` folders the model loads when a task calls for one.

``catalog`` finds them (shipped, the person's, the project's; Claude Code's places and
stagecrew's) and reads their front matter; ``provider`` is the ``skill`` tool and the system
prompt's "Skills" section; ``allowed_tools`` turns ``allowed-tools`` into allow rules (shared
with custom commands). Skills marked ``user-invocable`` (the default) are also ``/name``
commands for the person, through ``stagecrew.commands``.

A loaded skill's ``allowed-tools`` travel in the tool result's metadata (``allow_rules``); the
agent loop does not apply them yet, so within a run they pre-approve nothing until it does
(``PermissionChecker.remember`` is the call that would: it lifts ``ask``, never ``deny``).
"""

from stagecrew.skills.allowed_tools import AllowedToolsError, allow_rules, split_tool_list
from stagecrew.skills.catalog import (
    Problem,
    Skill,
    SkillCatalog,
    discover_skills,
    load_skill,
    shipped_skills_dir,
    skill_locations,
)

__all__ = [
    "AllowedToolsError",
    "Problem",
    "Skill",
    "SkillCatalog",
    "allow_rules",
    "discover_skills",
    "load_skill",
    "shipped_skills_dir",
    "skill_locations",
    "split_tool_list",
]
