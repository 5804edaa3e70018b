"""Before a command starts anything: can it use the directories it will write?

A run writes in two places: the project's ``.stagecrew/state/`` (the session's event log,
written by the supervisor) and the per-user state home (``STAGECREW_HOME``, else the platform
state dir: the head record, its lock and start-up logs; see ``orchestrator.runtime.
state_home``). Found unusable only once a Ray head is up and a session is open, either costs
a traceback and a half-made session. So the CLI checks them first: each is created if missing
(as the runtime and the supervisor would), listed, and written to (a probe file, removed at
once); the first problem is one line naming the directory that is in the way and the fix.

No ray import here, and nothing session-shaped is created: no session directory, no log.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from stagecrew.config import PROJECT_DIR, describe_os_error, find_project_root
from stagecrew.layout import state_dir

STATE_HOME_VAR = "STAGECREW_HOME"


class PreflightError(Exception):
    """A directory the command needs is unusable; the message says which and how to fix it."""


def state_home_path(environ: dict[str, str] | None = None) -> Path:
    """Where ``runtime.state_home()`` keeps its state, without creating anything (that
    function creates the directory, and would raise where this module must explain)."""
    override = (os.environ if environ is None else environ).get(STATE_HOME_VAR)
    if override:
        return Path(override)
    from platformdirs import user_state_dir

    return Path(user_state_dir("stagecrew"))


def project_state_path(workspace: Path) -> Path:
    return state_dir(workspace)


def workspace_for(cwd: Path | None) -> Path:
    """The project root a command works in (as the runner finds it), or ``PreflightError``
    when the directory is not there or its path is not text stagecrew can carry."""
    try:
        start = Path.cwd() if cwd is None else cwd
    except OSError as exc:
        raise PreflightError(
            "the current directory is gone (deleted or unmounted); cd into the project"
        ) from exc
    if cwd is not None and not os.path.isdir(cwd):
        raise PreflightError(f"--cwd {cwd}: no such directory")
    workspace = find_project_root(start)
    try:
        str(workspace).encode("utf-8")
    except UnicodeEncodeError:
        # The path travels in JSON messages and event logs, which carry text only.
        raise PreflightError(
            f"the workspace path {workspace} is not valid UTF-8; rename it to a UTF-8 name"
        ) from None
    return workspace


def check_dir(
    path: Path,
    purpose: str,
    *,
    write: bool = True,
    create: bool = True,
    own: Path | None = None,
    mode: int = 0o777,
) -> bool:
    """Create ``path`` if missing, then list it and (``write``) write a probe file in it.

    ``purpose`` says what the directory is for, in the error; ``own`` is the top of the tree
    stagecrew owns (see ``config.find_blocker``). Without ``create`` a missing directory is
    fine (a reader finds nothing there). Returns whether the directory was created.
    """
    path = Path(os.path.abspath(path))
    want = "rwx" if write else "rx"

    def fail(exc: OSError) -> PreflightError:
        problem = describe_os_error(path, exc, want=want, own=own)
        return PreflightError(f"cannot use {path} ({purpose}): {problem}")

    created = False
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not create:
            return False
        try:
            os.makedirs(path, mode=mode, exist_ok=True)
        except OSError as exc:
            raise fail(exc) from exc
        created = True
    except OSError as exc:
        raise fail(exc) from exc
    else:
        if not stat.S_ISDIR(st.st_mode):
            raise PreflightError(
                f"cannot use {path} ({purpose}): it is not a directory; move it away"
            )
    try:
        with os.scandir(path) as entries:
            next(entries, None)
        if write:
            fd, probe = tempfile.mkstemp(prefix=".crew-probe-", dir=path)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise fail(exc) from exc
    return created


def check_project_state(workspace: Path, *, write: bool = True, create: bool = True) -> None:
    """The project's ``.stagecrew/state/``: a run creates it and the supervisor writes the
    session logs there; a resume appends to them (``create=False``); ``crew logs`` and
    ``crew tasks`` only read them (``write=False``). Only a run creates the directory."""
    state = project_state_path(workspace)
    own = Path(workspace) / PROJECT_DIR
    created = check_dir(
        state, "where session logs go", write=write, create=write and create, own=own
    )
    if created:
        from stagecrew.orchestrator.eventlog import ensure_state_ignored

        ensure_state_ignored(workspace)  # as the supervisor would: never part of a diff


def check_state_home(*, write: bool = True) -> None:
    """The per-user state home (head record, lock, start-up logs)."""
    home = state_home_path()
    check_dir(
        home,
        f"stagecrew's state directory; {STATE_HOME_VAR} chooses another",
        write=write,
        own=home,
        mode=0o700,
    )


def check_for_session(cwd: Path | None) -> Path:
    """Everything a run or a resume needs before it starts; returns the workspace."""
    workspace = workspace_for(cwd)
    check_project_state(workspace)
    check_state_home()
    return workspace


__all__ = [
    "PreflightError",
    "check_dir",
    "check_for_session",
    "check_project_state",
    "check_state_home",
    "project_state_path",
    "state_home_path",
    "workspace_for",
]
