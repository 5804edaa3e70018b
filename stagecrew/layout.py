"""Where stagecrew keeps things in a project: the one owner of the ``.stagecrew/`` layout.

```
.stagecrew/config.json            project configuration
.stagecrew/agents/*.md            agent profiles
.stagecrew/memory/MEMORY.md       project memory
.stagecrew/plans/                 plan-mode plans
.stagecrew/state/                 git-ignored from inside: nothing here is a project file
    memory.db                     the FTS5 index
    sessions/<id>/events.jsonl    a session's log (and checkpoint.md, notes.md, tasks/ ...)
    worktrees/<id>/               Max Mode candidates' worktrees
    rewind/                       rewind points: a shadow git repository (git/, index)
```

Everything that names one of these paths asks this module, so moving one is one edit.
Imports nothing of stagecrew's (every layer may use it).
"""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = ".stagecrew"


def project_dir(workspace: Path | str) -> Path:
    return Path(workspace) / PROJECT_DIR


def config_file(workspace: Path | str) -> Path:
    return project_dir(workspace) / "config.json"


def agents_dir(workspace: Path | str) -> Path:
    return project_dir(workspace) / "agents"


def memory_dir(workspace: Path | str) -> Path:
    return project_dir(workspace) / "memory"


def plans_dir(workspace: Path | str) -> Path:
    return project_dir(workspace) / "plans"


def state_dir(workspace: Path | str) -> Path:
    return project_dir(workspace) / "state"


def sessions_dir(workspace: Path | str) -> Path:
    return state_dir(workspace) / "sessions"


def session_dir(workspace: Path | str, session: str) -> Path:
    return sessions_dir(workspace) / session


def session_log(workspace: Path | str, session: str) -> Path:
    return session_dir(workspace, session) / "events.jsonl"


def worktrees_dir(workspace: Path | str, session: str) -> Path:
    return state_dir(workspace) / "worktrees" / session


def rewind_dir(workspace: Path | str) -> Path:
    """The shadow repository of rewind points (``stagecrew.rewind``): its own git dir and
    index, so the person's repository is never written to."""
    return state_dir(workspace) / "rewind"


def runtime_home() -> Path:
    """The person's runtime state outside any project (the head record with the control
    port's token, the head's logs): ``STAGECREW_HOME``, else the platform's state dir."""
    import os

    override = os.environ.get("STAGECREW_HOME")
    if override:
        return Path(override)
    from platformdirs import user_state_dir

    return Path(user_state_dir("stagecrew"))
