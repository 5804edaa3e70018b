"""How the bash tool confines a command: never writing in plan mode, writing only the
workspace in build mode.

**Plan mode** (``ctx.read_only``), two layers, best first:

* **bubblewrap.** The command runs under ``bwrap`` with the whole filesystem (workspace
  included) bind-mounted read-only, a private tmpfs on ``/tmp`` and ``/run`` (the latter so
  that Unix sockets such as docker's or postgres's, which a read-only bind does *not* protect,
  are out of reach), fresh ``/dev`` and ``/proc``, no network, its own PID/IPC namespaces, every
  capability dropped (we may be root, and root keeps ``CAP_SYS_ADMIN`` inside bwrap otherwise,
  which is enough to remount ``/`` read-write), ``--die-with-parent`` and ``--new-session``. The
  kernel enforces read-only, so *any* command may run: ``sed -i`` simply fails with EROFS.
* **an allowlist**, when bwrap is missing or does not work here (containers without user
  namespaces). Nothing enforces anything at run time, so we only run commands we can prove
  read-only from their text: every simple command (see ``shell_parse``) must be on the list,
  with only options known to be read-only (a long one spelled out in full: GNU getopt and git
  take any unambiguous prefix, so ``sed --in-pl`` is ``--in-place``), no redirection into a
  file, no substitutions and nothing we failed to parse. Everything else raises
  ``SandboxRefused`` *before* anything runs.

**Build mode** (``ctx.sandbox``; config ``sandbox.mode``, ``auto`` by default) is Codex's
workspace-write and Claude Code's Linux sandbox: under bwrap the workspace is writable and the
rest of the file system read-only, HOME included. ``/tmp`` is a directory private to the agent
(its commands share it: a script written there by one call runs in the next), ``/run`` an
empty tmpfs (docker's, dbus's and ssh-agent's sockets are out of reach). The kernel enforces
the paths the agent's deny rules name, whatever the command line looks like: ``deny read``
paths are masked (an empty read-only file or directory mounted over them, so ``cat``,
``python -c open()`` and a symlink made by the command all read nothing), ``deny edit`` and
``deny write`` paths are read-only. So is what runs or is trusted later *outside* the
sandbox: ``.git/hooks`` and ``.git/config`` (also a ``core.hooksPath``, submodules' and linked
worktrees' pointers), ``.stagecrew/``, ``.claude/`` and ``.mcp.json``; ``.git`` is pinned in
place so it cannot be swapped for another, and ``git commit`` still writes objects and refs.
stagecrew's own state (``.stagecrew/state``) is masked. Tool caches (``XDG_CACHE_HOME``, npm's,
go's modules) point at a per-workspace cache only sandboxed commands use: the person's caches
stay read-only, since a wheel or build object planted there would run later outside.
``sandbox.writable`` adds writable paths. ``sandbox.network`` is ``allow`` (the host's network,
its 127.0.0.1 services included) or ``deny``/``loopback``: a network namespace of the command's
own, where bwrap always brings ``lo`` up, so both reach only servers the command started.
Each command has its own PID namespace, so a ``cmd &`` ends with its call (``run_in_background``
keeps a server); it stays in the tool's process group, so a timeout or ``kill_shell`` reaches
the whole tree. Without bwrap, ``auto`` runs commands plainly and says so once per session;
``required`` refuses to run them.

Force the fallbacks with ``STAGECREW_NO_BWRAP=1`` or ``sandbox.FORCE_FALLBACK = True``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagecrew import layout
from stagecrew.tools.base import PathRules, SandboxPolicy, ToolContext
from stagecrew.tools.shell_parse import SHELLS, SimpleCommand, split_command

__all__ = [
    "ENV_NO_BWRAP",
    "FORCE_FALLBACK",
    "INSTALL_HINT",
    "READONLY_COMMANDS",
    "BuildSandbox",
    "SandboxMissing",
    "SandboxRefused",
    "build_sandbox",
    "bwrap_argv",
    "check_readonly_command",
    "is_readonly_command_part",
    "readonly_argv",
    "reset_sandbox_probe",
    "sandbox_available",
    "unavailable_reason",
]

ENV_NO_BWRAP = "STAGECREW_NO_BWRAP"
# Module switch, for tests and for users who distrust bwrap on their machine.
FORCE_FALLBACK = False

_SUFFIX = "only read-only commands are allowed without a sandbox"


class SandboxRefused(Exception):
    """The allowlist could not prove a command read-only; ``part`` is the offending piece."""

    def __init__(self, detail: str, part: str | None = None) -> None:
        self.detail = detail
        self.part = part
        super().__init__(f"plan mode: {detail}; {_SUFFIX}")


# --------------------------------------------------------------------------------------------
# bubblewrap

_probe_lock = threading.Lock()
_probe_result: bool | None = None


def _bwrap() -> str | None:
    return shutil.which("bwrap")


def _forced_off() -> bool:
    return FORCE_FALLBACK or os.environ.get(ENV_NO_BWRAP, "").strip() not in ("", "0", "false")


def sandbox_available() -> bool:
    """True when bwrap exists *and* runs here; probed once per process, the env is read always."""
    global _probe_result
    if _forced_off():
        return False
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _probe()
        return _probe_result


def reset_sandbox_probe() -> None:
    """Forget the cached probe (after installing bwrap, or in tests)."""
    global _probe_result
    with _probe_lock:
        _probe_result = None


def _probe() -> bool:
    """Run ``true`` with exactly the flags we use: some kernels allow bwrap but not, say, PID ns."""
    if _bwrap() is None:
        return False
    argv = bwrap_argv("true", Path("/"), Path("/"))
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def hidden_runtime_paths(masked: tuple[str, ...] = ("/tmp", "/run")) -> list[Path]:
    """This Python's prefixes and the PATH directories that the sandbox's private /tmp and
    /run would hide (a virtualenv created under /tmp, say): bound back read-only, so the
    interpreter and the person's tools stay reachable inside the sandbox."""
    import sys

    candidates = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent]
    candidates += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    out: list[Path] = []
    for path in candidates:
        try:
            real = path.resolve()
        except OSError:
            continue
        hidden = any(str(real) == m or str(real).startswith(m + "/") for m in masked)
        if hidden and real.exists() and real not in out:
            out.append(real)
    return out


def bwrap_argv(command: str, workspace: Path, cwd: Path) -> list[str]:
    """The argv that runs ``bash -c command`` read-only under bubblewrap, in ``cwd``."""
    bwrap = _bwrap() or "bwrap"
    workspace = Path(os.path.realpath(workspace))
    cwd = Path(os.path.realpath(cwd))
    argv = [
        bwrap,
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--tmpfs", "/run",
    ]  # fmt: skip
    # The tmpfs mounts above would hide a workspace living under /tmp (pytest's tmp_path, say):
    # bind it back, read-only, on top.
    for path in _unique([*hidden_runtime_paths(), workspace, cwd]):
        if path != Path("/") and path.exists():
            argv += ["--ro-bind", str(path), str(path)]
    argv += [
        "--unshare-net",
        "--unshare-pid",
        "--as-pid-1",  # no bwrap init left a zombie per command: see _namespace_options
        "--unshare-ipc",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        # git status would otherwise try to refresh the index and print a read-only error.
        "--setenv", "GIT_OPTIONAL_LOCKS", "0",
        "--setenv", "TMPDIR", "/tmp",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--chdir", str(cwd),
        "--",
        "bash", "-c", command,
    ]  # fmt: skip
    return argv


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out and not any(p.is_relative_to(q) for q in out):
            out.append(p)
    return out


def readonly_argv(command: str, ctx: ToolContext) -> list[str]:
    """An argv that runs ``command`` without changing anything, or ``SandboxRefused``.

    With bwrap the argv is self-contained (it chdirs itself). Without, the argv is plain
    ``bash -c`` (behind ``env GIT_OPTIONAL_LOCKS=0``) and the caller must run it in ``ctx.cwd``
    as it does for any command.
    """
    cwd = ctx.cwd or ctx.workspace
    if sandbox_available():
        return bwrap_argv(command, ctx.workspace, cwd)
    check_readonly_command(command)
    return ["env", "GIT_OPTIONAL_LOCKS=0", "bash", "-c", command]


# --------------------------------------------------------------------------------------------
# Build mode: the workspace writable, everything else read-only

INSTALL_HINT = "install bubblewrap (apt install bubblewrap, dnf install bubblewrap)"
# Entries of the workspace the deny-rule walk looks at per command start (directories whose
# listing is cached cost one stat each); beyond it, deeper paths go unmasked and the person is
# told once.
WALK_CAP = 50_000
# Existing paths outside the workspace one deny rule's glob may name (``~/.ssh/**``).
OUTSIDE_CAP = 2_000
# A directory changed this recently may change again within the same mtime tick: its listing
# is not cached (git's "racy" rule).
_RACY_NS = 2_000_000_000
# Tools whose deny rules name paths the sandbox enforces for commands.
_READ_TOOLS = ("read",)
_WRITE_TOOLS = ("edit", "write", "apply_patch")
# Workspace entries a command must not change, because something outside the sandbox runs or
# trusts them later: stagecrew's and Claude Code's project settings (hooks, MCP servers,
# permission rules), and git's configuration and hooks (handled in ``_git_protected``).
_PROTECTED_NAMES = (".stagecrew", ".claude", ".mcp.json")
# Tool caches that do not follow XDG_CACHE_HOME, and their defaults (see ``_cache_env``).
_CACHE_VARS = {
    "XDG_CACHE_HOME": "~/.cache",
    "npm_config_cache": "~/.npm",
    "GOMODCACHE": "~/go/pkg/mod",
}
_NOTICE_FILE = "sandbox-notice"


class SandboxMissing(Exception):
    """``sandbox.mode: required`` and bubblewrap does not work here: bash must not run."""


@dataclass(frozen=True)
class BuildSandbox:
    """One build-mode command's confinement, resolved when it starts.

    ``tmp_dir`` is the host directory the command sees as ``/tmp``: private to the agent but
    shared by its commands, so a script written to /tmp by one call runs in the next.
    """

    tmp_dir: Path
    options: tuple[str, ...]
    # Why a deny rule could not be enforced everywhere (the walk hit its cap), or "".
    warning: str = ""

    def argv(self, inner: Sequence[str], cwd: Path) -> list[str]:
        """``inner`` (``bash -c …``) under bwrap, started in ``cwd``."""
        return [*self.options, "--chdir", str(cwd), "--", *inner]

    def inside(self, host_path: Path) -> str:
        """The path a file of ``tmp_dir`` has inside the sandbox."""
        return str(Path("/tmp") / host_path.relative_to(self.tmp_dir))


def build_sandbox(ctx: ToolContext, env: Mapping[str, str]) -> BuildSandbox | None:
    """How to confine one build-mode command now; None to run it plainly (no policy, mode
    ``off``, or no bubblewrap under ``auto``, which the person is told once per session).

    Raises ``SandboxMissing`` under ``required`` when bubblewrap does not work. Blocking (it
    may probe bwrap and walks the workspace for deny rules): call it off the event loop.
    """
    policy = ctx.sandbox
    if policy is None or policy.mode == "off":
        return None
    if not sandbox_available():
        why = unavailable_reason()
        if policy.mode == "required":
            raise SandboxMissing(
                f"bash needs the sandbox (sandbox.mode: required), but {why}: {INSTALL_HINT}, "
                "or set sandbox.mode: auto to run commands without it"
            )
        _announce_once(
            ctx,
            f"bash runs without a sandbox: {why}. Deny rules are checked against the command "
            f"line only. To confine commands, {INSTALL_HINT}; to silence this, set "
            "sandbox.mode: off",
        )
        return None
    state = _build_state(ctx)
    with state.lock:
        options, warning = _build_options(ctx, policy, state, env)
    if warning:
        _announce_once(ctx, warning, key="walk")
    return BuildSandbox(state.tmp_dir, tuple(options), warning)


def unavailable_reason() -> str:
    """Why ``sandbox_available()`` is False, in words for a notice or a refusal."""
    if FORCE_FALLBACK:
        return "the sandbox is turned off (sandbox.FORCE_FALLBACK)"
    if _forced_off():
        return f"the sandbox is turned off by {ENV_NO_BWRAP}"
    path = _bwrap()
    if path is None:
        return "bubblewrap is not installed"
    return f"bubblewrap ({path}) cannot create its namespaces here"


# -- per-agent state ---------------------------------------------------------------------------


_TMP_PREFIX = "stagecrew-sandbox-tmp-"


class _BuildState:
    """What an agent's commands share: the private /tmp and the deny walk's cache. Kept in
    ``ctx.state``; the /tmp directory goes when the agent does, or, if its process was
    killed first (agent hosts usually are), when the next agent starts on this machine."""

    def __init__(self, ctx: ToolContext) -> None:
        _sweep_stale_tmp_dirs()
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.tmp_dir, True)
        policy = ctx.sandbox
        rules = policy.rules if policy is not None else None
        self.deny = _DenyPaths(rules, ctx.workspace) if rules is not None else None
        # Commands start one at a time per agent; the lock keeps the walk's cache whole if
        # two ever start together.
        self.lock = threading.Lock()


_state_lock = threading.Lock()


def _sweep_stale_tmp_dirs() -> None:
    """Remove the private /tmp directories of agents whose process is gone (the pid is in
    the name; one of another user's is left alone, and a reused pid only delays a sweep)."""
    root = Path(tempfile.gettempdir())
    try:
        entries = [e for e in os.scandir(root) if e.name.startswith(_TMP_PREFIX)]
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(_TMP_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue


def _build_state(ctx: ToolContext) -> _BuildState:
    with _state_lock:
        state = ctx.state.get("build_sandbox")
        if not isinstance(state, _BuildState) or not state.tmp_dir.is_dir():
            state = _BuildState(ctx)
            ctx.state["build_sandbox"] = state
        return state


def _announce_once(ctx: ToolContext, text: str, key: str = "unsandboxed") -> None:
    """Tell the person ``text`` once per session: a marker file in the session directory
    (shared by the session's agents and turns, whichever process runs them), else once per
    agent."""
    policy = ctx.sandbox
    if policy is None or policy.notify is None:
        return
    if ctx.session_dir is not None:
        marker = Path(ctx.session_dir) / f"{_NOTICE_FILE}-{key}"
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        except OSError:
            pass  # an unwritable session directory: fall back to once per agent
        else:
            os.close(fd)
            policy.notify(text)
            return
    seen: set[str] = ctx.state.setdefault("sandbox_notices", set())
    if key not in seen:
        seen.add(key)
        policy.notify(text)


# -- the bwrap options -------------------------------------------------------------------------


def _build_options(
    ctx: ToolContext, policy: SandboxPolicy, state: _BuildState, env: Mapping[str, str]
) -> tuple[list[str], str]:
    """Mounts in the order they must stack (a later mount covers an earlier one): the
    read-only root with a private /tmp and /run, masks outside the writable roots, the
    writable roots, the git directories pinned in place, what must stay read-only inside
    them, then the masks inside them."""
    workspace = Path(os.path.realpath(ctx.workspace))
    git = _git_layout(workspace)
    masks, readonly, warning = state.deny.resolve() if state.deny else ([], [], "")
    cache_env = _cache_env(workspace, policy, env)
    writable = _writable_roots(workspace, policy, bool(cache_env))
    if workspace in readonly:  # a deny rule for every edit: the workspace stays read-only
        writable.remove(workspace)
    roots = [*writable, workspace]  # bound below: masks under them must come after
    inside = _outermost([m for m in masks if _under(m, roots)])
    outside = _outermost([m for m in masks if not _under(m, roots)])
    masked = [*outside, *inside]
    options = [
        _bwrap() or "bwrap",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--bind", str(state.tmp_dir), "/tmp",
        "--tmpfs", "/run",
    ]  # fmt: skip
    for path in [*hidden_runtime_paths(), *_run_passthrough()]:
        options += ["--ro-bind", str(path), str(path)]
    for path in outside:
        options += _mask(path)
    options += _binds("--bind", _outermost(writable), outside)
    if workspace in writable:
        options += _binds("--bind", _git_pins(git), masked)
        options += _binds("--ro-bind", _protected(workspace), masked)
        options += _binds("--bind", _protected_holes(workspace), masked)
    options += _binds("--ro-bind", sorted({*_git_protected(git), *readonly}), masked)
    for path in inside:
        options += _mask(path)
    state_dir = layout.state_dir(workspace)
    if state_dir.is_dir() and not _under(state_dir, masked):
        # stagecrew's own records: no command needs them, and rewind snapshots hold copies
        # of files the deny rules mask.
        options += _mask(state_dir)
    home = Path(os.path.realpath(layout.runtime_home()))
    if home.is_dir() and not _under(home, [*masked, state_dir]):
        # The head record holds the control port's token: with it a command could start a
        # session of its own choosing, sandbox off.
        options += _mask(home)
    options += _namespace_options(policy)
    options += ["--setenv", "TMPDIR", "/tmp"]
    for name, value in cache_env.items():
        options += ["--setenv", name, value]
    return options, warning


def _namespace_options(policy: SandboxPolicy) -> list[str]:
    """Its own PID namespace (nothing outside can be seen, signalled or ptraced, and what the
    command leaves behind ends with it), no capabilities, no nested user namespaces, and the
    network the policy asks for. Not ``--new-session``: the command must stay in the process
    group the bash tool kills on timeout (it has no controlling terminal to abuse anyway: the
    tool starts it in a new session, and ``--dev`` hides the host's ptys). ``--as-pid-1``: the
    command itself is the namespace's init, so bwrap exits only once it has reaped it;
    bwrap's own init would be left a zombie wherever the host's PID 1 does not reap orphans
    (containers), one per command. (As init, bash ignores the timeout's SIGTERM; the SIGKILL
    that follows ends it.)"""
    options = [*_userns_options(), "--unshare-pid", "--as-pid-1", "--unshare-ipc"]
    options += ["--die-with-parent", "--cap-drop", "ALL"]
    if policy.network in ("deny", "loopback"):
        # bwrap brings up the new namespace's own ``lo``: the command reaches servers it
        # started itself, nothing outside (not the internet, not the host's 127.0.0.1).
        options.append("--unshare-net")
    return options


_userns_lock = threading.Lock()
_userns_result: list[str] | None = None


def _userns_options() -> list[str]:
    """``--unshare-user --disable-userns`` where this bwrap and kernel support them (probed
    once): a command that cannot create user namespaces cannot build new mount trees."""
    global _userns_result
    with _userns_lock:
        if _userns_result is None:
            flags = ["--unshare-user", "--disable-userns"]
            argv = [_bwrap() or "bwrap", *flags, "--ro-bind", "/", "/", "--", "true"]
            try:
                ok = subprocess.run(argv, capture_output=True, timeout=15).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
            _userns_result = flags if ok else []
        return list(_userns_result)


def _mask(path: Path) -> list[str]:
    """An empty read-only directory or file in place of ``path``."""
    if path.is_dir():
        return ["--tmpfs", str(path), "--remount-ro", str(path)]
    return ["--ro-bind", "/dev/null", str(path)]


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """Sorted, without paths inside another one of the list (a mount inside an empty
    read-only tmpfs could not even create its mount point)."""
    out: list[Path] = []
    for path in sorted(set(paths)):
        if not _under(path, out):
            out.append(path)
    return out


def _run_passthrough() -> list[Path]:
    """What the private /run must still show: the resolver configuration when
    /etc/resolv.conf points into /run (systemd-resolved), or name lookups would fail."""
    real = Path(os.path.realpath("/etc/resolv.conf"))
    if real.is_relative_to("/run") and real.exists():
        return [real.parent]
    return []


def _writable_roots(workspace: Path, policy: SandboxPolicy, with_cache: bool) -> list[Path]:
    """The workspace, the sandbox's tool cache, and the paths ``sandbox.writable`` adds."""
    roots = [workspace]
    if with_cache:
        cache = _cache_root(workspace)
        cache.mkdir(parents=True, exist_ok=True)
        roots.append(cache)
    for raw in policy.writable:
        path = Path(os.path.expanduser(raw))
        real = Path(os.path.realpath(path if path.is_absolute() else workspace / path))
        if real.exists() and real != Path("/"):
            roots.append(real)
    return list(dict.fromkeys(roots))


def _cache_root(workspace: Path) -> Path:
    """Per workspace: a cache only this workspace's sandboxed commands read, so what one
    command puts there can only reach commands that could write the workspace anyway."""
    from platformdirs import user_cache_dir

    digest = hashlib.sha256(str(workspace).encode()).hexdigest()[:16]
    return Path(user_cache_dir("stagecrew")) / "sandbox-cache" / digest


def _cache_env(workspace: Path, policy: SandboxPolicy, env: Mapping[str, str]) -> dict[str, str]:
    """Tool caches (pip, uv, go, npm, pre-commit, …) pointed at the sandbox's own cache.

    The person's caches stay read-only: a command that could write ~/.cache could plant a
    wheel, a pre-commit environment or a build object that runs later outside the sandbox.
    Tools that need a writable cache (uv, go, npm) would fail on a read-only one, so they get
    one that only this workspace's sandboxed commands use. A cache inside the workspace or a
    path of ``sandbox.writable`` is used as it is."""
    allowed = [workspace]
    for raw in policy.writable:
        expanded = os.path.expanduser(raw)
        if os.path.isabs(expanded):
            allowed.append(Path(os.path.realpath(expanded)))
    root = _cache_root(workspace)
    out: dict[str, str] = {}
    for name, default in _CACHE_VARS.items():
        current = Path(os.path.realpath(os.path.expanduser(env.get(name) or default)))
        if not _under(current, allowed):
            out[name] = str(root / name.lower())
    return out


def _protected(workspace: Path) -> list[Path]:
    return [workspace / name for name in _PROTECTED_NAMES if (workspace / name).exists()]


def _protected_holes(workspace: Path) -> list[Path]:
    """What stays writable inside ``.stagecrew``: plans and memory are the project's notes,
    read as text, never run or obeyed."""
    return [p for p in (layout.plans_dir(workspace), layout.memory_dir(workspace)) if p.is_dir()]


def _binds(flag: str, paths: Sequence[Path], masked: Sequence[Path]) -> list[str]:
    """``flag PATH PATH`` for each path not inside a mask (whose empty read-only tmpfs
    could not even hold the mount point)."""
    out: list[str] = []
    for path in paths:
        if not _under(path, masked):
            out += [flag, str(path), str(path)]
    return out


# -- git -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GitLayout:
    worktree: Path
    git_dir: Path
    common_dir: Path


def _git_layout(workspace: Path) -> _GitLayout | None:
    """The repository the workspace is in, read from ``.git`` the way git finds it (a
    directory, or a file naming one for worktrees and submodules); no git process."""
    for top in (workspace, *workspace.parents):
        dot = top / ".git"
        if dot.is_dir():
            git_dir = dot
        elif dot.is_file():
            try:
                text = dot.read_text(errors="replace").strip()
            except OSError:
                return None
            if not text.startswith("gitdir:"):
                return None
            git_dir = top / text.removeprefix("gitdir:").strip()
        else:
            continue
        common = git_dir
        with contextlib.suppress(OSError):
            common = git_dir / (git_dir / "commondir").read_text().strip()
        real = Path(os.path.realpath(git_dir))
        return _GitLayout(top, real, Path(os.path.realpath(common)))
    return None


_HOOKS_PATH_RE = re.compile(r"^\s*hookspath\s*=\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def _git_pins(git: _GitLayout | None) -> list[Path]:
    """The repository's git directories bound onto themselves, writable: ``git commit``
    works (also from a subdirectory of the repository or a linked worktree, whose git
    directories live outside the workspace), and a mount point cannot be renamed, so a
    command cannot move ``.git`` aside and put one with its own config in its place."""
    if git is None:
        return []
    return [p for p in dict.fromkeys([git.common_dir, git.git_dir]) if p.is_dir()]


def _git_protected(git: _GitLayout | None) -> list[Path]:
    """What git runs or obeys later, outside the sandbox: hooks (also a ``core.hooksPath``
    directory, such as husky's), configuration (aliases, ``core.fsmonitor``, filters) and
    the pointers of a linked worktree, for the repository and its submodules. A missing
    hooks directory is created, empty, so it can be held read-only (``git init`` makes one)."""
    if git is None:
        return []
    out: list[Path] = []
    dot = git.worktree / ".git"
    if dot.is_file():
        out.append(dot)
    gitdirs = [git.common_dir, git.git_dir, *_submodule_dirs(git.common_dir)]
    for gitdir in dict.fromkeys(gitdirs):
        hooks = gitdir / "hooks"
        if not hooks.exists() and (gitdir / "config").is_file():
            with contextlib.suppress(OSError):
                hooks.mkdir()
        for name in ("hooks", "config", "config.worktree", "commondir", "gitdir"):
            if (gitdir / name).exists():
                out.append(gitdir / name)
        out += _hooks_paths(gitdir, git.worktree)
    return out


def _submodule_dirs(common_dir: Path, limit: int = 200) -> list[Path]:
    """The git directories of submodules (``.git/modules/**`` holding a ``config``)."""
    found: list[Path] = []
    stack = [common_dir / "modules"]
    while stack and len(found) < limit:
        here = stack.pop()
        try:
            entries = [e for e in os.scandir(here) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            if (path / "config").is_file():
                found.append(path)
                stack.append(path / "modules")
            else:
                stack.append(path)
    return found


def _hooks_paths(gitdir: Path, worktree: Path) -> list[Path]:
    out: list[Path] = []
    for name in ("config", "config.worktree"):
        try:
            text = (gitdir / name).read_text(errors="replace")
        except OSError:
            continue
        for m in _HOOKS_PATH_RE.finditer(text):
            raw = os.path.expanduser(m.group(1).strip().strip('"'))
            path = Path(os.path.realpath(raw if os.path.isabs(raw) else worktree / raw))
            if path.exists():
                out.append(path)
    return out


# -- deny rules as paths -----------------------------------------------------------------------


@dataclass
class _DirScan:
    mtime_ns: int
    hits: list[tuple[str, str]]  # (name, "mask" | "readonly")
    subdirs: list[str]


class _DenyPaths:
    """The existing paths the agent's deny rules name: ``deny read`` ones are masked,
    ``deny edit``/``write`` ones made read-only.

    The permission checker decides every path (its matching is the one truth); a loose
    regex built from the deny rules' patterns only picks which entries to ask about, and
    never misses one the checker would deny (``*`` may cross ``/``, case is ignored, a match
    of a directory covers what is inside). Patterns naming paths outside the workspace
    (``~/.ssh/**``, ``/etc/x``) are globbed where they point; the workspace is walked, each
    directory's listing cached until its mtime moves (paths are strings here: the walk runs
    before every command, and ``Path`` objects would triple its cost).
    """

    def __init__(self, rules: PathRules, workspace: Path) -> None:
        self.rules = rules
        self.workspace = workspace
        relevant = [r for r in rules.rules if _is_path_deny(r)]
        self.any_rule = bool(relevant)
        patterns = [str(r.pattern) for r in relevant if getattr(r, "pattern", None)]
        self.loose = _loose_regex(patterns)
        self.outside_patterns = [p for p in patterns if _outside_forms(p)]
        # Masked whole for every command (see ``_build_options``): nothing to look for inside.
        self.skip = {str(layout.state_dir(workspace))}
        # ``deny edit`` with no pattern: every edit, so the whole workspace stays read-only.
        self.all_readonly = self.any_rule and self._denied(_WRITE_TOOLS, workspace)
        self._scans: dict[str, _DirScan] = {}

    def resolve(self) -> tuple[list[Path], list[Path], str]:
        """(paths to mask, paths to hold read-only, a warning when the walk was cut)."""
        if not self.any_rule:
            return [], [], ""
        masks: list[Path] = []
        readonly: list[Path] = []
        if self.all_readonly:
            readonly.append(self.workspace)
        truncated = False
        if self.loose is not None:
            found, truncated = self._walk()
            for path, kind in [*found, *self._outside()]:
                (masks if kind == "mask" else readonly).append(Path(path))
        warning = ""
        if truncated:
            warning = (
                f"the workspace has more than {WALK_CAP:,} entries: deny rules were applied to "
                "the paths found before that limit only"
            )
        return masks, readonly, warning

    def _walk(self) -> tuple[list[tuple[str, str]], bool]:
        found: list[tuple[str, str]] = []
        budget = WALK_CAP
        stack = [str(self.workspace)]
        while stack:
            here = stack.pop()
            scan, cost = self._scan(here, budget)
            budget -= cost
            if scan is None:
                continue
            found += [(f"{here}/{name}", kind) for name, kind in scan.hits]
            if budget <= 0:
                return found, True
            stack += [f"{here}/{name}" for name in scan.subdirs]
        return found, False

    def _scan(self, here: str, budget: int) -> tuple[_DirScan | None, int]:
        """One directory's hits and subdirectories, and how many entries that cost."""
        try:
            mtime = os.stat(here).st_mtime_ns
        except OSError:
            return None, 1
        cached = self._scans.get(here)
        if cached is not None and cached.mtime_ns == mtime:
            return cached, 1
        assert self.loose is not None
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError:
            return None, 1
        hits: list[tuple[str, str]] = []
        subdirs: list[str] = []
        for entry in entries[: max(budget, 0)]:
            kind = self._kind(Path(entry.path)) if self.loose.search(entry.path) else None
            if kind is not None:
                hits.append((entry.name, kind))
            descend = kind != "mask" and entry.name != ".git" and entry.path not in self.skip
            if descend and _is_dir(entry):
                subdirs.append(entry.name)
        scan = _DirScan(mtime, hits, subdirs)
        if time.time_ns() - mtime > _RACY_NS and len(entries) <= budget:
            self._scans[here] = scan
        return scan, max(len(entries), 1)

    def _outside(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for pattern in self.outside_patterns:
            for form in _outside_forms(pattern):
                for path in _glob_existing(form):
                    if path == Path("/") or path.is_relative_to(self.workspace):
                        continue
                    kind = self._kind(path)
                    if kind is not None:
                        out.append((str(path), kind))
        return out

    def _kind(self, path: Path) -> str | None:
        if self._denied(_READ_TOOLS, path):
            return "mask"
        if self._denied(_WRITE_TOOLS, path):
            return "readonly"
        return None

    def _denied(self, tools: Sequence[str], path: Path) -> bool:
        """Whether a deny *rule* decides this path for one of ``tools`` (an ``ask`` turned
        into a deny because nobody is at the terminal does not count: the person could have
        said yes)."""
        for tool in tools:
            decision = self.rules.check(tool, {"file_path": str(path)}, self.workspace)
            rule = str(getattr(decision, "rule", "") or "")
            if getattr(decision, "action", None) == "deny" and rule.lower().startswith("deny"):
                return True
        return False


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_path_deny(rule: Any) -> bool:
    if getattr(rule, "action", None) != "deny":
        return False
    matches = getattr(rule, "matches_tool", None)
    return callable(matches) and any(matches(t) for t in (*_READ_TOOLS, *_WRITE_TOOLS))


def _loose_regex(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex over absolute paths that matches whatever any pattern could match (see
    ``_DenyPaths``); None when no rule has a pattern."""
    parts = [_loose(p) for p in patterns]
    if not parts:
        return None
    body = "|".join(f"(?:{p})" for p in parts)
    return re.compile(rf"(?:^|/)(?:{body})(?:/.*)?$", re.IGNORECASE | re.DOTALL)


def _loose(pattern: str) -> str:
    p = pattern
    for prefix in ("//", "~/", "./"):
        if p.startswith(prefix):
            p = p[len(prefix) :]
            break
    p = p.strip("/")
    while p.endswith("/**"):
        p = p[:-3]
    if p in ("", "**", "*"):
        return ".*"
    out: list[str] = []
    i = 0
    while i < len(p):
        if p.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        c = p[i]
        if c == "\\" and i + 1 < len(p):
            out.append(".")
            i += 2
            continue
        if c == "[" and p.find("]", i + 2) != -1:
            out.append(".")
            i = p.find("]", i + 2) + 1
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return "".join(out)


def _outside_forms(pattern: str) -> list[str]:
    """The absolute globs a pattern may stand for outside the workspace: ``~/x`` (home),
    ``//x`` (Claude Code's absolute), ``/x`` (stagecrew's absolute, or Claude Code's relative
    to the home of a user-level settings file); the checker decides which one holds."""
    if pattern.startswith("~/"):
        return [os.path.expanduser(pattern)]
    if pattern.startswith("//"):
        return [pattern[1:]]
    if pattern.startswith("/"):
        return [pattern, os.path.expanduser("~") + pattern]
    return []


def _glob_existing(form: str) -> list[Path]:
    base = form
    while base.endswith("/**"):
        base = base[:-3]
    if not any(ch in base for ch in "*?["):
        return [Path(base)] if os.path.lexists(base) else []
    out: list[Path] = []
    for hit in glob.iglob(base, recursive=True, include_hidden=True):
        out.append(Path(hit))
        if len(out) >= OUTSIDE_CAP:
            break
    return out


# --------------------------------------------------------------------------------------------
# The allowlist

# A validator returns None when the arguments are read-only, else why not (for the message).
Validator = Callable[[str, list[str]], str | None]


def _always(_name: str, _args: list[str]) -> str | None:
    """For commands none of whose options writes a file or runs a program (``cat``, ``wc``):
    every option of theirs, abbreviated or not, is known to be read-only."""
    return None


def _words(text: str) -> list[str]:
    """Command and option lists read better as prose than as 80 quoted strings."""
    return text.split()


@dataclass(frozen=True)
class _Options:
    """The options of one command that plan mode knows to be read-only; anything else is
    refused. A long option counts only spelled out in full: GNU getopt and git accept any
    unambiguous prefix (``sed --in-pl`` is ``sed --in-place``, ``sort --out=F`` writes F), so
    a list of *dangerous* names can never be complete, and a list of safe ones must be exact.

    ``short``: letters without a value; ``short_value``: letters taking one (the rest of the
    cluster, or the next word); ``short_optional``: letters whose value can only be attached
    (``date -Iseconds``, ``git log -M50%``). ``long``, ``long_value`` (``--x=V`` or ``--x V``)
    and ``long_optional`` (``--x`` or ``--x=V``) likewise. ``refused`` names options with the
    reason they are refused, for a clearer message. ``values_follow``: False for git, whose
    operands plan mode does not need, so a next-word value is never skipped unchecked.
    """

    short: str = ""
    short_value: str = ""
    short_optional: str = ""
    long: frozenset[str] = frozenset()
    long_value: frozenset[str] = frozenset()
    long_optional: frozenset[str] = frozenset()
    refused: tuple[tuple[str, str], ...] = ()
    numeric: bool = False
    values_follow: bool = True


def _options(
    short: str = "",
    short_value: str = "",
    short_optional: str = "",
    long: str = "",
    long_value: str = "",
    long_optional: str = "",
    refused: dict[str, str] | None = None,
    *,
    numeric: bool = False,
    values_follow: bool = True,
) -> _Options:
    return _Options(
        short,
        short_value,
        short_optional,
        frozenset(_words(long)),
        frozenset(_words(long_value)),
        frozenset(_words(long_optional)),
        tuple((refused or {}).items()),
        numeric,
        values_follow,
    )


class _Parsed:
    """A command's arguments read against its ``_Options``: the first refusal, the operands,
    and the values given to options (``sed -e SCRIPT``), as (option, value)."""

    def __init__(self) -> None:
        self.refusal: str | None = None
        self.operands: list[str] = []
        self.values: list[tuple[str, str]] = []


def _read_options(name: str, args: list[str], spec: _Options) -> _Parsed:
    """Walk ``args`` getopt-style (clusters, ``--x=y``, ``--``, options after operands) and
    refuse the first option ``spec`` does not list as read-only."""
    out = _Parsed()
    i = 0
    while i < len(args) and out.refusal is None:
        arg = args[i]
        if arg == "--":
            out.operands += args[i + 1 :]
            break
        if arg.startswith("--"):
            i += _read_long(name, arg, args[i + 1 : i + 2], spec, out)
        elif arg.startswith("-") and len(arg) > 1:
            i += _read_short(name, arg, args[i + 1 : i + 2], spec, out)
        else:
            out.operands.append(arg)
            i += 1
    return out


def _refusal(name: str, option: str, spec: _Options) -> str:
    key = option.lstrip("-")
    why = dict(spec.refused).get(key)
    if why is not None:
        return f"'{name} {option}' {why}"
    hint = " (a read-only one is accepted spelled out in full)" if option.startswith("--") else ""
    return f"'{name} {option}' is not an option plan mode knows to be read-only{hint}"


def _read_long(name: str, arg: str, following: list[str], spec: _Options, out: _Parsed) -> int:
    """Read one ``--option``; returns how many words it took."""
    option, eq, value = arg[2:].partition("=")
    if option in spec.long_optional or (option in spec.long and not eq):
        out.values.append((option, value))
        return 1
    if option in spec.long_value:
        if eq or not spec.values_follow:
            out.values.append((option, value))
            return 1
        out.values.append((option, following[0] if following else ""))
        return 2
    out.refusal = _refusal(name, f"--{option}", spec)
    return 1


def _read_short(name: str, arg: str, following: list[str], spec: _Options, out: _Parsed) -> int:
    """Read one cluster of short options (``-la``, ``-n5``, ``-e PATTERN``)."""
    if spec.numeric and arg[1:].isdigit():
        return 1
    body = arg[1:]
    for k, letter in enumerate(body):
        rest = body[k + 1 :]
        if letter in spec.short_optional:
            out.values.append((letter, rest))
            return 1
        if letter in spec.short_value:
            if rest or not spec.values_follow:
                out.values.append((letter, rest))
                return 1
            out.values.append((letter, following[0] if following else ""))
            return 2
        if letter not in spec.short:
            out.refusal = _refusal(name, f"-{letter}", spec)
            return 1
    return 1


def _allow_options(spec: _Options, max_operands: int | None = None) -> Validator:
    """A validator accepting exactly the options in ``spec`` (and at most ``max_operands``
    operands: ``uniq IN OUT`` writes OUT)."""

    def check(name: str, args: list[str]) -> str | None:
        parsed = _read_options(name, args, spec)
        if parsed.refusal is not None:
            return parsed.refusal
        if max_operands is not None and len(parsed.operands) > max_operands:
            extra = parsed.operands[max_operands]
            return f"'{name} INPUT OUTPUT' writes its second operand ('{extra}')"
        return None

    return check


# -- find: primaries instead of options ------------------------------------------------------

_FIND_ACTIONS = frozenset(
    {"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"}
)
_FIND_FLAGS = frozenset(
    _words("""-print -print0 -ls -prune -quit -true -false -empty -nouser -nogroup -readable
    -writable -executable -depth -d -follow -mount -xdev -daystart -noleaf -ignore_readdir_race
    -noignore_readdir_race -not -a -and -o -or -help --help -version --version -nowarn -warn
    ( ) ! ,""")
)
_FIND_WITH_VALUE = frozenset(
    _words("""-name -iname -path -ipath -wholename -iwholename -regex -iregex -regextype -type
    -xtype -size -newer -anewer -cnewer -mtime -mmin -atime -amin -ctime -cmin -used -user
    -group -uid -gid -perm -links -inum -samefile -maxdepth -mindepth -lname -ilname -fstype
    -context -printf -files0-from""")
)
_FIND_NEWER_XY = re.compile(r"^-newer[aBcmt][aBcmt]$")


def _find_expression_start(args: list[str]) -> int:
    """Past find's own options (``-H -L -P -D debug -O3``), where its operands begin."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-H", "-L", "-P"):
            i += 1
        elif arg == "-D":
            i += 2
        elif arg.startswith("-O") and arg[2:].isdigit():
            i += 1
        else:
            break
    return i


def _find(name: str, args: list[str]) -> str | None:
    """``find`` takes primaries, not options: each must be one known to only read or print."""
    i = _find_expression_start(args)
    while i < len(args):
        arg = args[i]
        if arg in _FIND_ACTIONS:
            return f"'{name} {arg}' can run commands or modify files"
        if arg in _FIND_WITH_VALUE or _FIND_NEWER_XY.match(arg):
            i += 2
            continue
        if arg.startswith("-") and len(arg) > 1 and arg not in _FIND_FLAGS:
            return f"'{name} {arg}' is not a primary plan mode knows to be read-only"
        i += 1
    return None


# -- sed, date ---------------------------------------------------------------------------------

_SED_OPTIONS = _options(
    short="nErszub",
    short_value="el",
    long="quiet silent regexp-extended separate null-data zero-terminated unbuffered posix "
    "debug sandbox follow-symlinks binary help version",
    long_value="expression line-length",
    refused={
        "i": "can modify files",
        "in-place": "can modify files",
        "f": "runs a script that cannot be checked",
        "file": "runs a script that cannot be checked",
    },
)
_SED_ADDR_RE = re.compile(
    r"\s*(?:(?:\d+(?:~\d+)?|\$|/(?:\\.|[^/\\\n])*/I?)"
    r"(?:\s*,\s*(?:\d+|\$|/(?:\\.|[^/\\\n])*/I?|[+~]\d+))?)?\s*!?\s*"
)
_SED_SIMPLE = set("pdDnNPhHgGxz=lF}")
_SED_S_FLAGS = set("gpiImM0123456789")


def _sed_script_safe(script: str) -> bool:
    """Only print/delete/substitute/quit scripts: no ``w``/``r``/``e``, no ``s///w`` or ``///e``."""
    i, n = 0, len(script)
    while i < n:
        m = _SED_ADDR_RE.match(script, i)
        i = m.end() if m else i
        if i >= n:
            break
        c = script[i]
        i += 1
        if c in ";\n{":
            continue  # ``{`` opens a block: the next command follows directly
        if c == "#":
            while i < n and script[i] != "\n":
                i += 1
            continue
        if c in "qQ":
            while i < n and (script[i].isdigit() or script[i] == " "):
                i += 1
        elif c in "sy":
            if i >= n or script[i] in "\\\n":
                return False
            delim = script[i]
            i += 1
            for _ in range(2):
                while i < n and script[i] != delim:
                    i += 2 if script[i] == "\\" else 1
                if i >= n:
                    return False
                i += 1
            if c == "s":
                while i < n and script[i] in _SED_S_FLAGS:
                    i += 1
        elif c not in _SED_SIMPLE:
            return False
        while i < n and script[i] in " \t":
            i += 1
        if i < n and script[i] not in ";\n}":
            return False
    return True


def _sed(name: str, args: list[str]) -> str | None:
    parsed = _read_options(name, args, _SED_OPTIONS)
    if parsed.refusal is not None:
        return parsed.refusal
    scripts = [value for option, value in parsed.values if option in ("e", "expression")]
    if not scripts and parsed.operands:
        scripts.append(parsed.operands[0])
    for script in scripts:
        if not _sed_script_safe(script):
            return (
                f"'{name}' script {script!r} may write files or run commands "
                "(only print/delete/substitute scripts are allowed)"
            )
    return None


_CLOCK = "sets the system clock"
_DATE_OPTIONS = _options(
    short="uR",
    short_value="dfr",
    short_optional="I",
    long="utc universal rfc-email debug resolution help version",
    long_value="date file reference rfc-3339",
    long_optional="iso-8601",
    refused={"s": _CLOCK, "set": _CLOCK},
)


def _date(name: str, args: list[str]) -> str | None:
    parsed = _read_options(name, args, _DATE_OPTIONS)
    if parsed.refusal is not None:
        return parsed.refusal
    for operand in parsed.operands:
        if not operand.startswith("+"):
            return f"'{name} {operand}' {_CLOCK}"
    return None


# -- the other commands with options that write or run programs ------------------------------

_WRITES = "can write files"
_RUNS = "runs a program"
_SORT_OPTIONS = _options(
    short="bdfgiMhnRrVcCmsuz",
    short_value="kSt",
    long="ignore-leading-blanks dictionary-order ignore-case general-numeric-sort "
    "ignore-nonprinting month-sort human-numeric-sort numeric-sort random-sort reverse "
    "version-sort merge stable unique zero-terminated debug help version",
    long_value="key buffer-size field-separator sort random-source batch-size parallel files0-from",
    long_optional="check",
    refused={
        "o": _WRITES,
        "output": _WRITES,
        "T": "writes temporary files into a directory",
        "temporary-directory": "writes temporary files into a directory",
        "compress-program": _RUNS,
    },
)
_UNIQ_OPTIONS = _options(
    short="cdDiuz",
    short_value="fsw",
    long="count repeated ignore-case unique zero-terminated help version",
    long_value="skip-fields skip-chars check-chars",
    long_optional="all-repeated group",
)
_TREE_OUTPUT = "writes an output file"
_TREE_OPTIONS = _options(
    short="adlfxqNQpugshDFvtcUrCAJSnXi",
    short_value="LPIHT",
    long="noreport dirsfirst filesfirst inodes device prune matchdirs ignore-case gitignore si "
    "du nolinks metafirst info fromfile fromtabfile help version",
    long_value="charset filelimit timefmt sort gitfile infofile hintro houtro",
    refused={"o": _TREE_OUTPUT, "output": _TREE_OUTPUT, "R": _TREE_OUTPUT},
)
_FILE_OPTIONS = _options(
    short="bcdEhiklLNnrsSzZ0",
    short_value="efFmP",
    long="brief checking-printout extension no-dereference mime mime-type mime-encoding "
    "keep-going list dereference no-pad no-buffer raw special-files no-sandbox uncompress "
    "uncompress-noreport print0 apple help version",
    long_value="exclude exclude-quiet files-from separator magic-file parameter",
    refused={
        "C": "writes a magic file",
        "compile": "writes a magic file",
        "p": "resets the files' access times",
        "preserve-date": "resets the files' access times",
    },
)
_RG_OPTIONS = _options(
    short="bsclFLh.ivnxUIN0oPpqzSauVHw",
    short_value="ABCEfgMmertTjd",
    long="auto-hybrid-regex binary block-buffered byte-offset case-sensitive column count "
    "count-matches crlf debug files files-with-matches files-without-match fixed-strings follow "
    "glob-case-insensitive heading hidden ignore-case ignore-file-case-insensitive include-zero "
    "invert-match json line-buffered line-number line-regexp max-columns-preview mmap multiline "
    "multiline-dotall no-config no-filename no-heading no-ignore no-ignore-dot no-ignore-exclude "
    "no-ignore-files no-ignore-global no-ignore-messages no-ignore-parent no-ignore-vcs "
    "no-line-number no-messages no-mmap no-pcre2-unicode no-require-git no-unicode null "
    "null-data one-file-system only-matching passthru pcre2 pcre2-version pretty quiet "
    "search-zip smart-case stats text trim type-list unrestricted version vimgrep "
    "with-filename word-regexp help no-hidden no-follow no-binary no-column no-crlf "
    "no-fixed-strings no-glob-case-insensitive no-ignore-file-case-insensitive no-include-zero "
    "no-invert-match no-json no-max-columns-preview no-multiline no-multiline-dotall "
    "no-one-file-system no-pcre2 no-search-zip no-text no-trim no-auto-hybrid-regex "
    "no-block-buffered no-line-buffered no-byte-offset no-null-data no-stats no-encoding "
    "no-context-separator ignore-vcs ignore-dot ignore-exclude ignore-files ignore-global "
    "ignore-parent ignore-messages messages require-git unicode pcre2-unicode sort-files "
    "no-sort-files stop-on-nonmatch no-unrestricted",
    long_value="after-context before-context color colors context context-separator "
    "dfa-size-limit encoding engine field-context-separator field-match-separator file glob "
    "iglob ignore-file max-columns max-count max-depth max-filesize path-separator "
    "regex-size-limit regexp replace sort sortr threads type type-add type-clear type-not "
    "pre-glob hyperlink-format generate",
    refused={"pre": "runs a preprocessor program", "hostname-bin": _RUNS},
)
_ENV_SPLIT = "builds a command line plan mode cannot check"
_ENV_OPTIONS = _options(
    short="i0v",
    short_value="uC",
    long="ignore-environment null debug list-signal-handling help version",
    long_value="unset chdir",
    long_optional="block-signal default-signal ignore-signal",
    refused={"S": _ENV_SPLIT, "split-string": _ENV_SPLIT},
)
_TIME_OPTIONS = _options(
    short="pvq",
    short_value="f",
    long="portability verbose quiet help version",
    long_value="format",
    refused={
        "o": _TREE_OUTPUT,
        "output": _TREE_OUTPUT,
        "a": _TREE_OUTPUT,
        "append": _TREE_OUTPUT,
    },
)
_PROFILES = "as a login or interactive shell runs profile scripts"
_SHELL_OPTIONS = _options(
    short="cefuxvnhBCHPTabkmprs",
    short_value="oO",
    long="norc noprofile posix noediting restricted verbose version help no-config",
    refused=dict.fromkeys(("l", "i", "login", "rcfile", "init-file"), _PROFILES),
)


def _shell(name: str, args: list[str]) -> str | None:
    """``bash -c`` is fine (its script is checked) unless it would source profiles first."""
    return _read_options(name, args, _SHELL_OPTIONS).refusal


# -- git ---------------------------------------------------------------------------------------

_GIT_OUT = "can write files or run programs"
_GIT_DIFF = _options(
    short="pusztRawbWimcr",
    short_value="USGOIl",
    short_optional="MCBX",
    long="patch no-patch raw patch-with-raw patch-with-stat numstat shortstat summary name-only "
    "name-status check full-index binary no-color no-color-moved no-renames rename-empty "
    "no-rename-empty find-copies-harder irreversible-delete text ignore-cr-at-eol "
    "ignore-space-at-eol ignore-space-change ignore-all-space ignore-blank-lines minimal "
    "patience histogram indent-heuristic no-indent-heuristic function-context exit-code quiet "
    "no-prefix default-prefix ita-invisible-in-index ita-visible-in-index no-ext-diff "
    "no-textconv pickaxe-all pickaxe-regex compact-summary no-relative cached staged merge-base "
    "no-index cc combined-all-paths full-diff no-stat base ours theirs",
    long_value="unified inter-hunk-context diff-algorithm stat-width stat-name-width stat-count "
    "stat-graph-width src-prefix dst-prefix line-prefix output-indicator-new "
    "output-indicator-old output-indicator-context diff-filter anchored ws-error-highlight "
    "word-diff-regex ignore-matching-lines skip-to rotate-to orderfile find-object diff-merges",
    long_optional="stat dirstat cumulative color color-moved color-moved-ws word-diff "
    "color-words abbrev relative submodule ignore-submodules find-renames find-copies "
    "break-rewrites",
    refused={"output": _GIT_OUT, "ext-diff": _GIT_OUT, "textconv": _GIT_OUT},
    numeric=True,
    values_follow=False,
)
_GIT_REVS = _options(
    short="iEFPg",
    short_value="nL",
    long="all reflog not merges no-merges no-min-parents no-max-parents first-parent left-right "
    "left-only right-only cherry-mark cherry-pick cherry boundary simplify-by-decoration "
    "simplify-merges full-history dense sparse show-pulls topo-order date-order "
    "author-date-order reverse do-walk all-match invert-grep regexp-ignore-case basic-regexp "
    "extended-regexp fixed-strings perl-regexp remove-empty walk-reflogs graph no-graph oneline "
    "abbrev-commit no-abbrev-commit no-abbrev no-expand-tabs no-notes show-signature "
    "relative-date parents children no-decorate source use-mailmap mailmap no-mailmap "
    "no-use-mailmap log-size follow clear-decorations count bisect quiet in-commit-order "
    "objects objects-edge unpacked timestamp header show-linear-break single-worktree "
    "ignore-missing",
    long_value="glob exclude min-parents max-parents max-count skip since after until before "
    "since-as-filter author committer grep grep-reflog encoding format date decorate-refs "
    "decorate-refs-exclude exclude-hidden",
    long_optional="branches tags remotes ancestry-path no-walk pretty expand-tabs notes "
    "show-notes decorate abbrev",
    numeric=True,
    values_follow=False,
)


def _merge_options(*specs: _Options) -> _Options:
    """One command taking the options of several families (``git log``: revisions and diffs),
    for git: a next-word value is never skipped unchecked."""
    return _Options(
        short="".join(s.short for s in specs),
        short_value="".join(s.short_value for s in specs),
        short_optional="".join(s.short_optional for s in specs),
        long=frozenset().union(*(s.long for s in specs)),
        long_value=frozenset().union(*(s.long_value for s in specs)),
        long_optional=frozenset().union(*(s.long_optional for s in specs)),
        refused=tuple(r for s in specs for r in s.refused),
        numeric=any(s.numeric for s in specs),
        values_follow=False,
    )


_GIT_LOG = _merge_options(_GIT_REVS, _GIT_DIFF)
_GIT_OPTIONS: dict[str, _Options] = {
    "diff": _GIT_DIFF,
    "log": _GIT_LOG,
    "show": _GIT_LOG,
    "rev-list": _GIT_LOG,
    "status": _options(
        short="sbvz",
        short_optional="u",
        long="short branch show-stash long verbose no-renames renames ahead-behind "
        "no-ahead-behind null no-column",
        long_optional="porcelain untracked-files ignore-submodules ignored find-renames column",
        values_follow=False,
    ),
    "blame": _options(
        short="blpstewcfn",
        short_value="LS",
        short_optional="MC",
        long="root show-stats first-parent porcelain line-porcelain incremental progress "
        "no-progress score-debug show-email show-name show-number color-lines color-by-age "
        "minimal",
        long_value="reverse encoding contents date ignore-rev ignore-revs-file since",
        long_optional="abbrev",
        values_follow=False,
    ),
    "rev-parse": _options(
        short="q",
        long="all verify quiet sq sq-quote not symbolic symbolic-full-name revs-only no-revs "
        "flags no-flags git-dir git-common-dir absolute-git-dir is-inside-git-dir "
        "is-inside-work-tree is-bare-repository is-shallow-repository show-toplevel show-cdup "
        "show-prefix show-superproject-working-tree show-ref-format shared-index-path "
        "local-env-vars keep-dashdash stop-at-non-option stuck-long parseopt end-of-options",
        long_value="glob exclude exclude-hidden disambiguate default prefix resolve-git-dir "
        "git-path path-format since after until before",
        long_optional="branches tags remotes abbrev-ref short show-object-format",
        values_follow=False,
    ),
    "ls-files": _options(
        short="cdmoiskuztvf",
        short_value="xX",
        long="cached deleted modified others ignored stage killed directory no-empty-directory "
        "eol unmerged resolve-undo exclude-standard error-unmatch full-name recurse-submodules "
        "debug deduplicate sparse",
        long_value="exclude exclude-from exclude-per-directory with-tree format",
        long_optional="abbrev",
        values_follow=False,
    ),
    "ls-tree": _options(
        short="drtlz",
        long="long name-only name-status object-only full-name full-tree",
        long_value="format",
        long_optional="abbrev",
        values_follow=False,
    ),
    "cat-file": _options(
        short="tsepZ",
        long="batch-all-objects buffer unordered follow-symlinks allow-unknown-type use-mailmap "
        "mailmap no-mailmap",
        long_value="path",
        long_optional="batch batch-check batch-command",
        refused={"textconv": _GIT_OUT, "filters": _GIT_OUT},
        values_follow=False,
    ),
    "describe": _options(
        long="all tags contains exact-match debug long always first-parent",
        long_value="candidates match exclude",
        long_optional="abbrev dirty broken",
        values_follow=False,
    ),
    "shortlog": _merge_options(
        _GIT_REVS,
        _options(
            short="nsec",
            short_optional="w",
            long="numbered summary email committer",
            long_value="format group",
        ),
    ),
    "show-ref": _options(
        short="dsq",
        long="head heads tags branches dereference verify quiet exists",
        long_optional="hash abbrev exclude-existing",
        values_follow=False,
    ),
    "grep": _options(
        short="iIwvhHEGPFnlLzocpWaqr",
        short_value="efABCm",
        long="ignore-case word-regexp invert-match full-name extended-regexp basic-regexp "
        "perl-regexp fixed-strings line-number column files-with-matches name-only "
        "files-without-match null only-matching count no-color break heading show-function "
        "function-context and or not all-match quiet cached untracked no-index "
        "recurse-submodules exclude-standard no-exclude-standard recursive no-recursive text "
        "no-textconv",
        long_value="max-depth threads after-context before-context context max-count",
        long_optional="color",
        refused={
            "O": "runs a pager program",
            "open-files-in-pager": "runs a pager program",
            "textconv": _GIT_OUT,
        },
        values_follow=False,
    ),
}
_GIT_READ = frozenset({*_GIT_OPTIONS, "branch", "remote"})
_GIT_BRANCH_OK = frozenset(
    {
        "-a", "--all", "-r", "--remotes", "-v", "-vv", "--verbose", "-l", "--list",
        "--show-current", "--contains", "--no-contains", "--merged", "--no-merged",
        "--points-at", "--sort", "--format", "--color", "--no-color", "--column", "--no-column",
        "-i", "--ignore-case", "--abbrev", "--no-abbrev", "--omit-empty",
    }
)  # fmt: skip
_GIT_BRANCH_WITH_ARG = frozenset(
    {"--contains", "--no-contains", "--merged", "--no-merged", "--points-at", "--sort", "--format"}
)


def _git(name: str, args: list[str]) -> str | None:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        opt = args[i]
        if opt in ("-C", "--git-dir", "--work-tree", "--namespace"):
            i += 2
        elif opt.startswith(("--git-dir=", "--work-tree=", "--namespace=")) or opt in (
            "--no-pager",
            "-P",
            "--no-optional-locks",
            "--bare",
            "--literal-pathspecs",
            "--no-replace-objects",
        ):
            i += 1
        else:
            return f"'{name} {opt}' can change what git runs"
    if i >= len(args):
        return None  # bare ``git`` prints usage
    sub, rest = args[i], args[i + 1 :]
    if sub not in _GIT_READ:
        return f"'{name} {sub}' can modify the repository or files"
    if sub == "branch":
        return _git_branch(name, rest)
    if sub == "remote":
        if any(a not in ("-v", "--verbose") for a in rest):
            return f"'{name} remote {' '.join(rest)}' can modify the repository (only listing)"
        return None
    return _read_options(f"{name} {sub}", rest, _GIT_OPTIONS[sub]).refusal


def _git_branch(name: str, args: list[str]) -> str | None:
    listing = any(a in ("-l", "--list") for a in args)
    i = 0
    while i < len(args):
        arg = args[i]
        opt = arg.split("=", 1)[0]
        if arg.startswith("-"):
            if opt not in _GIT_BRANCH_OK:
                return f"'{name} branch {arg}' can modify branches (only listing is allowed)"
            if opt in _GIT_BRANCH_WITH_ARG and "=" not in arg:
                i += 1
        elif not listing:
            return f"'{name} branch {arg}' creates a branch (only listing is allowed)"
        i += 1
    return None


def _assigns_dangerous(name: str, args: list[str]) -> str | None:
    """``read PATH`` and ``printf -v PATH …`` assign variables too."""
    for arg in args:
        if _DANGEROUS_VARS.match(arg):
            return f"'{name} {arg}' sets {arg}, which changes which programs run"
    return None


def _env(name: str, args: list[str]) -> str | None:
    return _read_options(name, args, _ENV_OPTIONS).refusal


_READ_ANY = _words("""
    ls cat head tail wc grep egrep fgrep stat pwd echo printf diff cmp comm true false test [
    which type basename dirname realpath readlink du df cut tr nl rev column paste fold expand
    unexpand od hexdump strings whoami id uname printenv seq sleep md5sum sha1sum sha224sum
    sha256sum sha384sum sha512sum b2sum cksum jq cd pushd popd dirs tac nproc ps pgrep
    : set export unset local declare readonly shift exit return wait read
""")

READONLY_COMMANDS: dict[str, Validator] = dict.fromkeys(_READ_ANY, _always)
READONLY_COMMANDS.update(
    {
        "find": _find,
        "rg": _allow_options(_RG_OPTIONS),
        "file": _allow_options(_FILE_OPTIONS),
        "tree": _allow_options(_TREE_OPTIONS),
        "sort": _allow_options(_SORT_OPTIONS),
        "uniq": _allow_options(_UNIQ_OPTIONS, max_operands=1),
        "date": _date,
        "sed": _sed,
        "git": _git,
        "env": _env,
        "read": _assigns_dangerous,
        "printf": _assigns_dangerous,
    }
)
# With xargs, arguments arrive on stdin where we cannot see them (``echo -delete | xargs find``),
# so only commands that have no dangerous flag at all may follow it.
_SAFE_UNDER_XARGS = frozenset(
    _words("""cat head tail wc grep egrep fgrep ls stat echo basename dirname realpath readlink
    du md5sum sha1sum sha256sum sha512sum cksum printf diff cmp""")
)
# Wrappers that run nothing but the command they wrap; those checked with ``_always`` have no
# option that writes a file or runs another program.
_WRAPPER_CHECKS: dict[str, Validator] = {
    "env": _env,
    "timeout": _always,
    "nice": _always,
    "command": _always,
    "exec": _always,
    "stdbuf": _always,
    "xargs": _always,
    "eval": _always,
    "trap": lambda n, a: f"'{n}' runs commands later, outside what plan mode can check",
    "time": _allow_options(_TIME_OPTIONS),
    "sudo": lambda n, a: f"'{n}' is not allowed",
    "nohup": lambda n, a: f"'{n}' detaches the command and may write nohup.out",
}
_BIN_DIRS = frozenset({"/bin", "/usr/bin", "/usr/local/bin", "/sbin", "/usr/sbin"})
# Variables that change which program runs or what a shell executes.
_DANGEROUS_VARS = re.compile(
    r"^(PATH|IFS|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PROMPT_COMMAND|PS4|PAGER|MANPAGER|EDITOR|VISUAL"
    r"|LESSOPEN|LESSCLOSE|LD_\w*|DYLD_\w*|GIT_\w*|BASH_FUNC_\w*)$"
)
_OK_WRITE_TARGETS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})
# Assignments the parse tree does not show as such: loop variables and ``${X:=…}`` / ``${X=…}``.
# Matched on the raw text, quotes and all: a false alarm only costs a refusal.
_HIDDEN_ASSIGNMENT_RE = re.compile(r"\b(?:for|select)\s+(\w+)|\$\{(\w+):?=")


def _program(word: str) -> str | None:
    """Bare names and system binaries only: ``./ls`` might be anything."""
    if "/" not in word:
        return word
    head, base = os.path.split(word)
    return base if head in _BIN_DIRS else None


def check_readonly_command(command: str) -> None:
    """Raise ``SandboxRefused`` unless every part of ``command`` is provably read-only."""
    parsed = split_command(command)
    for cmd in parsed.commands:
        _check_simple(cmd)
    for m in _HIDDEN_ASSIGNMENT_RE.finditer(command):
        var = m.group(1) or m.group(2)
        if _DANGEROUS_VARS.match(var):
            raise SandboxRefused(f"setting {var} changes which programs run", m.group(0))
    if parsed.unparseable:
        raise SandboxRefused(f"could not fully parse {command.strip()!r}", command)
    if parsed.has_substitution:
        raise SandboxRefused(
            f"{command.strip()!r} uses a command substitution, which cannot be checked", command
        )


def is_readonly_command_part(cmd: SimpleCommand) -> bool:
    """Whether the allowlist vouches for one simple command: the permission checker lets a
    command the allowlist knows to be read-only name an edit-denied path (``cat secret/x``)."""
    try:
        _check_simple(cmd)
    except SandboxRefused:
        return False
    return True


def _check_simple(cmd: SimpleCommand) -> None:
    shown = cmd.text.strip() or cmd.normalized
    if cmd.unparseable:
        raise SandboxRefused(f"could not fully parse {shown!r}", shown)
    if cmd.has_substitution:
        raise SandboxRefused(f"{shown!r} uses a substitution, which cannot be checked", shown)
    for redirect in cmd.redirects:
        if redirect.writes_file and str(redirect.target) not in _OK_WRITE_TARGETS:
            raise SandboxRefused(f"'{redirect}' writes to a file", shown)
    assignments = list(cmd.assignments)
    for wrapper in cmd.wrappers:
        name = _program(wrapper[0]) if wrapper else None
        if name is None:
            raise SandboxRefused(f"'{wrapper[0]}' is not a known program", shown)
        if name == "env":
            assignments += [a for a in wrapper[1:] if "=" in a and not a.startswith("-")]
        check = _shell if name in SHELLS else _WRAPPER_CHECKS.get(name)
        if check is None:
            raise SandboxRefused(f"'{name}' is not on the read-only allowlist", shown)
        reason = check(name, wrapper[1:])
        if reason:
            raise SandboxRefused(reason, shown)
    if cmd.argv and cmd.argv[0] in ("export", "declare", "local", "readonly"):
        assignments += [a for a in cmd.argv[1:] if "=" in a]
    for assignment in assignments:
        var = assignment.split("=", 1)[0]
        if _DANGEROUS_VARS.match(var):
            raise SandboxRefused(f"setting {var} changes which programs run", shown)
    if not cmd.argv:
        return  # a bare assignment
    name = _program(cmd.argv[0])
    if name is None:
        raise SandboxRefused(f"'{cmd.argv[0]}' is not a known program", shown)
    validator = READONLY_COMMANDS.get(name)
    if validator is None:
        raise SandboxRefused(f"'{name}' is not on the read-only allowlist", shown)
    if any(w and _program(w[0]) == "xargs" for w in cmd.wrappers) and name not in _SAFE_UNDER_XARGS:
        raise SandboxRefused(
            f"'xargs {name}' takes arguments from stdin that plan mode cannot check", shown
        )
    reason = validator(name, cmd.argv[1:])
    if reason:
        raise SandboxRefused(reason, shown)
