"""The shadow repository: a git directory of stagecrew's own, whose work tree is the workspace.

Why a separate repository instead of refs in the person's: rewind points are taken before every
mutating tool call, and anything written into the person's ``.git`` (objects, refs, a reflog, a
lock left by a killed process) is theirs to see in ``git count-objects``, ``git for-each-ref``
and ``gc``. Here every git command runs with ``GIT_DIR``, ``GIT_INDEX_FILE`` and
``GIT_WORK_TREE`` pointing at ``.stagecrew/state/rewind/`` and the workspace, so the person's
repository is only ever *read* by the file system walk — and a workspace that is no git
repository at all works the same.

The repository is also isolated from configuration: no system or global git config (an
``fsmonitor``, ``autocrlf`` or a hooks path there would change what is captured), and an
``info/attributes`` that switches off filters, EOL conversion and encodings the workspace's
``.gitattributes`` may ask for (an LFS filter would otherwise store pointers, not bytes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from stagecrew.layout import rewind_dir

# One identity for the point commits, so nothing depends on the person's user.name.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "stagecrew",
    "GIT_AUTHOR_EMAIL": "stagecrew@localhost",
    "GIT_COMMITTER_NAME": "stagecrew",
    "GIT_COMMITTER_EMAIL": "stagecrew@localhost",
}

# Settings of the shadow repository (its own config file; nothing else is read).
_CONFIG = {
    "core.bare": "false",
    "core.autocrlf": "false",
    "core.safecrlf": "false",
    "core.symlinks": "true",
    "core.filemode": "true",
    "core.ignorecase": "false",
    "core.precomposeunicode": "false",
    "core.fsmonitor": "false",
    "core.untrackedCache": "false",
    "core.logAllRefUpdates": "false",
    "gc.auto": "0",  # never a surprise gc inside a tool call
    # A point rewrites the index twice (update-index, write-tree); a split index writes only
    # what changed and version 4 compresses paths: about 10 ms less per point at 10k files.
    "core.splitIndex": "true",
    "index.version": "4",
}

# Highest-precedence attributes: bytes in, bytes out, whatever the workspace's
# .gitattributes say (filters, text/eol conversion, working-tree encodings).
_ATTRIBUTES = "* -text -filter -ident -working-tree-encoding\n"

# The directory ignores itself, whatever the state dir's own ignore file says.
_SELF_IGNORE = "# Written by stagecrew: rewind points are not project files.\n*\n"


class RewindError(RuntimeError):
    """A git command of the shadow repository failed; the message has git's stderr."""


class ShadowRepo:
    """The paths, environment and lock of one workspace's shadow repository."""

    def __init__(self, workspace: Path | str) -> None:
        self.workspace = Path(os.path.realpath(workspace))
        self.root = rewind_dir(self.workspace)
        self.git_dir = self.root / "git"
        self.index = self.root / "index"
        self.exclude_file = self.root / "exclude"
        self.excluded_json = self.root / "excluded.json"
        self._env = self._environment()

    # -- environment ---------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        # Any GIT_* the person's shell carries (GIT_DIR from a hook, GIT_INDEX_FILE, an
        # alternate object directory) would redirect our commands into their repository.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(_IDENTITY)
        env.update(
            {
                "GIT_DIR": str(self.git_dir),
                "GIT_WORK_TREE": str(self.workspace),
                "GIT_INDEX_FILE": str(self.index),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_TERMINAL_PROMPT": "0",
                "LC_ALL": "C",
            }
        )
        return env

    def env(self, **overrides: str) -> dict[str, str]:
        return {**self._env, **overrides}

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> bytes:
        """Run git against the shadow repository; stdout as bytes."""
        proc = subprocess.run(
            ["git", *args],
            cwd=self.workspace,
            env=dict(env) if env is not None else self._env,
            input=input,
            capture_output=True,
            check=False,
        )
        if check and proc.returncode != 0:
            err = proc.stderr.decode("utf-8", errors="replace").strip()
            raise RewindError(f"git {' '.join(args[:2])} failed (exit {proc.returncode}): {err}")
        return proc.stdout

    def text(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        return self.run(*args, env=env).decode("utf-8", errors="surrogateescape").strip()

    # -- creation and locking ------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.git_dir / "HEAD").is_file()

    def ensure(self) -> None:
        """Create the repository on first use (call with the lock held)."""
        if self.exists:
            return
        self.git_dir.mkdir(parents=True, exist_ok=True)
        # init must not see GIT_WORK_TREE, or it writes core.worktree (an absolute path that
        # would break when the project directory moves).
        init_env = {k: v for k, v in self._env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
        self.run("init", "-q", "--bare", str(self.git_dir), env=init_env)
        for key, value in _CONFIG.items():
            self.run("config", key, value)
        info = self.git_dir / "info"
        info.mkdir(exist_ok=True)
        (info / "attributes").write_text(_ATTRIBUTES, encoding="utf-8")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the shadow repository across processes (subagents run in other
        processes on the same workspace). A git lock file found while we hold this lock was
        left by a killed process and is removed, so one crash never blocks every later point."""
        self.root.mkdir(parents=True, exist_ok=True)
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text(_SELF_IGNORE, encoding="utf-8")
        with open(self.root / "lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                for stale in (Path(f"{self.index}.lock"), self.git_dir / "refs/heads/points.lock"):
                    with contextlib.suppress(FileNotFoundError):
                        stale.unlink()
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


__all__ = ["RewindError", "ShadowRepo"]
