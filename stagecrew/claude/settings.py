"""Claude Code's settings files: where they are and how they are read.

Hooks (``stagecrew.hooks``) and permission rules (``stagecrew.claude.permissions``) both live in
the same three files, so both ask here for the files and for their contents. A file that is
not there is no source; one that is there but cannot be used (unreadable, bad JSON, not an
object) is a ``ConfigError`` naming the file: skipping it would quietly run without a deny
rule or a guarding hook someone relies on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stagecrew.config import read_json_file

__all__ = ["SettingsFile", "default_home", "read_settings", "settings_files"]

Scope = Literal["user", "project", "local"]


@dataclass(frozen=True)
class SettingsFile:
    """One settings file: its path, the short name people know it by, and its scope."""

    path: Path
    # ``~/.claude/settings.json`` or ``.claude/settings.json``: what explanations print.
    label: str
    scope: Scope


def default_home() -> Path | None:
    """The person's home directory, which holds their ``.claude/``; None when there is none
    (no ``HOME`` and no password entry, as in some containers): then there are no user files."""
    try:
        return Path.home()
    except RuntimeError:
        return None


def read_settings(path: Path) -> dict[str, Any] | None:
    """A Claude Code settings file as a dict; None when there is no such file (an unreadable
    one is a ``ConfigError``: skipping it would quietly run without a guard someone relies on)."""
    return read_json_file(path, "settings file")


def settings_files(project_root: Path, home: Path | None = None) -> list[SettingsFile]:
    """The settings files of a session in ``project_root``, broadest first: the person's
    ``~/.claude/settings.json``, the team's ``.claude/settings.json``, the person's
    ``.claude/settings.local.json``. Existing or not; a path reached twice (a project in the
    home directory) is listed once, at its first place. ``home`` defaults to ``~``."""
    home = default_home() if home is None else home
    project = project_root / ".claude"
    candidates = (
        []
        if home is None
        else [SettingsFile(home / ".claude" / "settings.json", "~/.claude/settings.json", "user")]
    )
    candidates += [
        SettingsFile(project / "settings.json", ".claude/settings.json", "project"),
        SettingsFile(project / "settings.local.json", ".claude/settings.local.json", "local"),
    ]
    seen: set[str] = set()
    out: list[SettingsFile] = []
    for candidate in candidates:
        real = os.path.realpath(candidate.path)
        if real not in seen:
            seen.add(real)
            out.append(candidate)
    return out
