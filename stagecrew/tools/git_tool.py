"""git: the version-control moves an agent needs, and none it must not make.

Structured actions (rather than raw git through bash) let us enforce the two rules that matter:
nothing ever leaves the machine (there is no push, fetch or remote action, and anything that
looks like one is refused), and commits never land on a protected branch unless the session
explicitly allows it. The tool is ``sandboxable``: in read-only (plan) mode it still serves the
read actions (status, diff, log, listing branches) and refuses the rest itself, which is why
``execute`` may let it through.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from stagecrew.tools.base import Tool, ToolContext, ToolResult, WorkspaceError
from stagecrew.tools.paths import is_within, resolve_path

DEFAULT_PROTECTED = ("main", "master")
OUTPUT_LIMIT = 30_000
GIT_TIMEOUT = 120
READ_ACTIONS = frozenset({"status", "diff", "log"})
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",  # status must not rewrite the index (plan mode, other agents)
    "GIT_EDITOR": "true",
    "GIT_PAGER": "cat",
    "LC_ALL": "C",
}
_NO_PUSH = (
    "pushing is not available: stagecrew never pushes, fetches or talks to remotes; the user "
    "reviews the branch and pushes it themselves"
)


class GitArgs(BaseModel):
    action: Literal["status", "diff", "log", "add", "commit", "branch", "switch"] = Field(
        description="status | diff | log | add | commit | branch | switch"
    )
    staged: bool = Field(
        default=False, description="diff: show staged changes (the index) instead of unstaged."
    )
    paths: list[str] | None = Field(
        default=None, description="diff: limit to these paths. add: the paths to stage."
    )
    max_count: int = Field(default=20, ge=1, le=500, description="log: number of commits.")
    message: str | None = Field(default=None, description="commit: the commit message.")
    name: str | None = Field(
        default=None, description="branch: name of a branch to create (omit to list branches)."
    )
    branch: str | None = Field(default=None, description="switch: the branch to switch to.")
    create: bool = Field(default=False, description="switch: create the branch first.")

    @field_validator("action", mode="before")
    @classmethod
    def _refuse_push(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if any(word in lowered for word in ("push", "fetch", "pull", "remote")):
                raise ValueError(_NO_PUSH)
            return lowered
        return value


class GitError(Exception):
    """A failure to report to the model as is."""


def _cut(text: str, hint: str) -> str:
    if len(text) <= OUTPUT_LIMIT:
        return text
    kept = text[:OUTPUT_LIMIT]
    kept = kept[: kept.rfind("\n")] if "\n" in kept else kept
    return f"{kept}\n[... cut: {len(text) - len(kept):,} more characters. {hint}]"


def _open_repo(ctx: ToolContext) -> Any:
    import git

    start = ctx.cwd if ctx.cwd and is_within(os.path.realpath(ctx.cwd), ctx.workspace) else None
    start = start or ctx.workspace
    try:
        return git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GitError(
            f"Not a git repository: {start} (nor any of its parents) has no .git. If one is "
            "wanted, create it with bash: git init"
        ) from None


def _run(repo: Any, *args: str) -> str:
    """One git command through gitpython, with prompts, pagers and editors disabled."""
    import git

    with repo.git.custom_environment(**_GIT_ENV):
        try:
            out: str = repo.git.execute(
                ["git", *args], kill_after_timeout=GIT_TIMEOUT, strip_newline_in_stdout=False
            )
        except git.GitCommandError as exc:
            stderr = (exc.stderr or "").strip()
            stdout = (exc.stdout or "").strip()
            for prefix in ("stderr: ", "stdout: "):
                stderr = stderr.removeprefix(prefix).strip("'\n ")
                stdout = stdout.removeprefix(prefix).strip("'\n ")
            detail = stderr or stdout or str(exc)
            raise GitError(f"git {args[0]} failed: {detail}") from None
    return out


def _current_branch(repo: Any) -> str | None:
    try:
        return str(repo.active_branch.name)
    except TypeError:  # detached HEAD
        return None


def _has_commits(repo: Any) -> bool:
    try:
        repo.head.commit  # noqa: B018 - raises ValueError on an unborn branch
    except ValueError:
        return False
    return True


def _repo_paths(ctx: ToolContext, repo: Any, paths: list[str]) -> list[str]:
    root = Path(os.path.realpath(repo.working_tree_dir))
    out: list[str] = []
    for p in paths:
        if p.startswith("-"):
            raise GitError(f"path {p!r} looks like an option; give file paths only")
        resolved = resolve_path(ctx, p)
        if not is_within(resolved, root):
            raise GitError(f"path {p!r} is not inside the repository at {root}")
        rel = os.path.relpath(resolved, root)
        out.append("." if rel == "." else rel)
    return out


def _check_branch_name(repo: Any, name: str) -> None:
    if not name or name.startswith("-") or any(c.isspace() for c in name):
        raise GitError(f"invalid branch name {name!r}")
    try:
        _run(repo, "check-ref-format", "--branch", name)
    except GitError:
        raise GitError(f"invalid branch name {name!r} (see git check-ref-format)") from None


def _protected(ctx: ToolContext) -> list[str]:
    configured = ctx.services.protected_branches
    if configured is None:
        return list(DEFAULT_PROTECTED)
    return [str(b) for b in configured]


# --------------------------------------------------------------------------------------------
# Actions


def _status(repo: Any) -> str:
    out = _run(repo, "status", "--short", "--branch", "--untracked-files=normal").rstrip("\n")
    lines = out.splitlines()
    if len(lines) <= 1:
        out += "\nWorking tree clean."
    return _cut(out, "Run diff with paths to look at specific files.")


def _diff(ctx: ToolContext, repo: Any, args: GitArgs) -> str:
    cmd = ["diff", "--no-color", "--no-ext-diff"]
    if args.staged:
        cmd.append("--cached")
    paths = _repo_paths(ctx, repo, args.paths) if args.paths else []
    out = _run(repo, *cmd, "--", *paths)
    if not out.strip():
        what = "No staged changes" if args.staged else "No unstaged changes to tracked files"
        hint = ""
        if not args.staged and _run(repo, "diff", "--cached", "--name-only").strip():
            hint = " (there are staged changes: use staged=true)"
        untracked = _run(repo, "ls-files", "--others", "--exclude-standard").split()
        if untracked:
            hint += f"; {len(untracked)} untracked file(s) are not shown by diff (see status)"
        return what + (f" in {', '.join(paths)}" if paths else "") + hint + "."
    if len(out) > OUTPUT_LIMIT:
        stat = _run(repo, *cmd, "--stat", "--", *paths)
        return _cut(stat + "\n" + out, "Pass paths to see the rest file by file.")
    return out


def _log(repo: Any, args: GitArgs) -> str:
    if not _has_commits(repo):
        return f"No commits yet on {_current_branch(repo) or 'HEAD'}."
    out = _run(
        repo, "log", f"--max-count={args.max_count}", "--date=short", "--format=%h %ad %an: %s"
    )
    return _cut(out.rstrip("\n"), "Use a smaller max_count.")


def _add(ctx: ToolContext, repo: Any, args: GitArgs) -> str:
    if not args.paths:
        raise GitError("add needs paths: the files to stage (use ['.'] for everything)")
    paths = _repo_paths(ctx, repo, args.paths)
    _run(repo, "add", "--", *paths)
    staged = _run(repo, "diff", "--cached", "--name-status", "--", *paths).strip()
    if not staged:
        return f"Nothing new to stage in {', '.join(paths)} (already staged or unchanged)."
    return "Staged:\n" + _cut(staged, "")


def _commit(ctx: ToolContext, repo: Any, args: GitArgs) -> str:
    message = (args.message or "").strip()
    if not message:
        raise GitError("commit needs a message")
    branch = _current_branch(repo)
    protected = _protected(ctx)
    if branch in protected and not ctx.services.allow_protected_commit:
        raise GitError(
            f"refusing to commit on protected branch '{branch}' (protected: "
            f"{', '.join(protected)}). Create a branch first: git action=switch with "
            "branch='<name>' and create=true, then commit there."
        )
    if not _run(repo, "diff", "--cached", "--name-only").strip():
        raise GitError("nothing is staged to commit; stage files with action=add first")
    _run(repo, "commit", "--quiet", "-m", message)
    head = repo.head.commit
    stats = head.stats.total
    return (
        f"Committed {head.hexsha[:8]} on {branch or 'detached HEAD'}: "
        f"{message.splitlines()[0]} ({stats.get('files', 0)} files changed, "
        f"+{stats.get('insertions', 0)} -{stats.get('deletions', 0)})"
    )


def _branch(repo: Any, args: GitArgs) -> str:
    if not args.name:
        current = _current_branch(repo)
        listed = _run(repo, "branch", "--list", "--no-color").rstrip("\n")
        if not listed:
            return f"No branches yet (no commits). Current branch: {current or 'detached HEAD'}."
        return listed
    _check_branch_name(repo, args.name)
    if not _has_commits(repo):
        raise GitError(
            "cannot create a branch before the first commit; use action=switch with "
            f"branch='{args.name}' and create=true instead"
        )
    if args.name in [h.name for h in repo.heads]:
        raise GitError(f"branch '{args.name}' already exists")
    _run(repo, "branch", args.name)
    return (
        f"Created branch '{args.name}' at {repo.head.commit.hexsha[:8]} (still on "
        f"{_current_branch(repo) or 'detached HEAD'}; use action=switch to move to it)."
    )


def _switch(repo: Any, args: GitArgs) -> str:
    name = args.branch or args.name
    if not name:
        raise GitError("switch needs branch: the branch to switch to")
    _check_branch_name(repo, name)
    if args.create:
        if name in [h.name for h in repo.heads]:
            raise GitError(f"branch '{name}' already exists; switch to it without create")
        _run(repo, "switch", "--quiet", "-c", name)
        return f"Created and switched to branch '{name}'."
    _run(repo, "switch", "--quiet", name)
    return f"Switched to branch '{name}'."


def _git_sync(args: GitArgs, ctx: ToolContext) -> ToolResult:
    action = args.action
    if ctx.read_only and action not in READ_ACTIONS and not (action == "branch" and not args.name):
        return ToolResult(
            content=f"git {action} changes the repository and is not allowed in read-only "
            "(plan) mode; only status, diff, log and listing branches are.",
            is_error=True,
        )
    try:
        # Imported here: gitpython refuses to import at all on a machine without git, and that
        # must not take the registry (every other tool) down with it.
        import git
    except ImportError as exc:
        return ToolResult(content=f"git is not available here: {exc}", is_error=True)
    try:
        repo = _open_repo(ctx)
        try:
            if repo.bare:
                raise GitError(f"{repo.git_dir} is a bare repository; there is no working tree")
            if action == "status":
                text = _status(repo)
            elif action == "diff":
                text = _diff(ctx, repo, args)
            elif action == "log":
                text = _log(repo, args)
            elif action == "add":
                text = _add(ctx, repo, args)
            elif action == "commit":
                text = _commit(ctx, repo, args)
            elif action == "branch":
                text = _branch(repo, args)
            else:
                text = _switch(repo, args)
        finally:
            repo.close()
    except (GitError, WorkspaceError) as exc:
        return ToolResult(content=str(exc), is_error=True)
    except (OSError, ValueError, git.GitError) as exc:  # git missing, a corrupt repository...
        return ToolResult(
            content=f"git {action} failed: {type(exc).__name__}: {exc}", is_error=True
        )
    return ToolResult(content=text, metadata={"action": action})


class Git(Tool):
    name = "git"
    description = (
        "Work with the git repository containing the workspace. action: "
        "'status' (short status with branch); 'diff' (unstaged changes, or staged=true for "
        "the index; optional paths); 'log' (max_count recent commits, default 20); 'add' (stage "
        "paths); 'commit' (commit what is staged, with message); 'branch' (list branches, or "
        "create one named name); 'switch' (to branch; create=true makes it). Commits are "
        "refused on protected branches (main, master): switch to a new branch first. There is "
        "no push: the user pushes after reviewing. In read-only (plan) mode only status, diff, "
        "log and listing branches work."
    )
    Args = GitArgs
    # Not read_only (add/commit/switch change the repository), but it polices itself in plan
    # mode (see _git_sync), so execute may let it through for status/diff/log.
    sandboxable = True

    async def run(self, args: GitArgs, ctx: ToolContext) -> ToolResult:
        return await asyncio.to_thread(_git_sync, args, ctx)
