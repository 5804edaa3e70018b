"""Run verification commands without letting them change the person's working tree.

The judge runs checks *itself* rather than trusting the agent's report of them, and it must do
so without side effects: a test suite that writes caches, a command that deletes files, a build
that rewrites sources must not alter what the person sees. Two ways to guarantee that:

* **bwrap** (preferred): the command sees the whole filesystem read-only, a private ``/tmp``,
  no network, its own PID namespace when available (so nothing it spawns outlives it). Writes
  fail with EROFS, exactly as a read-only check should.
* **copy** (fallback, or forced with ``STAGECREW_NO_BWRAP=1``): the command runs in a throw-away
  ``copytree`` of the workspace, deleted afterwards. Writes succeed but land in the copy. This
  protects the workspace only, not the rest of the machine, and commands in one call share the
  copy (so a later command can see an earlier one's writes, which bwrap would have refused).

Every command runs in its own session/process group; on timeout the whole tree is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel

SandboxMode = Literal["bwrap", "copy"]

DEFAULT_MAX_OUTPUT_CHARS = 8_000
NO_BWRAP_ENV = "STAGECREW_NO_BWRAP"

_BWRAP_BASE = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
_PROBE_TIMEOUT_S = 10.0


class CheckResult(BaseModel):
    """The outcome of one verification command, as evidence a judge (or a person) can read."""

    command: str
    exit_code: int | None  # None when it timed out or could not be started
    passed: bool
    output: str  # stdout+stderr interleaved, tail only (see ``output_truncated``)
    output_truncated: bool = False
    duration_s: float
    timed_out: bool = False
    mode: SandboxMode

    def summary(self) -> str:
        """One line for prompts and logs: which command, how it ended."""
        if self.timed_out:
            status = f"TIMED OUT after {self.duration_s:.1f}s"
        elif self.exit_code is None:
            status = "could not be run"
        else:
            status = f"{'passed' if self.passed else 'FAILED'} (exit {self.exit_code})"
        return f"`{self.command}` {status}"


@lru_cache(maxsize=1)
def _probe_bwrap() -> tuple[bool, bool]:
    """(bwrap usable, PID namespace usable), probed once per process.

    bwrap is installed in many places where it cannot run (containers without user namespaces),
    so presence of the binary proves nothing: run the exact sandbox once and cache the answer.
    """
    exe = shutil.which("bwrap")
    if exe is None:
        return False, False

    def ok(extra: list[str]) -> bool:
        try:
            proc = subprocess.run(
                [exe, *_BWRAP_BASE, "--unshare-net", *extra, "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=_PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return proc.returncode == 0

    if not ok([]):
        return False, False
    return True, ok(["--unshare-pid"])


def bwrap_available() -> bool:
    """Whether checks will run under bwrap; honours ``STAGECREW_NO_BWRAP=1`` on every call."""
    if os.environ.get(NO_BWRAP_ENV, "").strip() not in ("", "0", "false", "no"):
        return False
    return _probe_bwrap()[0]


def _hidden_git_dirs(workspace: Path) -> list[Path]:
    """Git directories outside the workspace that ``--tmpfs /tmp`` would hide.

    A git worktree's ``.git`` is a file pointing into the main repository's ``.git``; when both
    live under /tmp (temporary checkouts, Max Mode roots), ``git`` inside the sandbox would find
    no repository unless those directories are bound back too.
    """
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir"],
            cwd=workspace,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    dirs: list[Path] = []
    for line in proc.stdout.splitlines():
        path = Path(os.path.realpath(line.strip()))
        hidden = path.is_relative_to("/tmp") and not path.is_relative_to(workspace)
        if line.strip() and hidden and path not in dirs:
            dirs.append(path)
    return dirs


def _bwrap_argv(workspace: Path, command: str, shell: str, git_dirs: list[Path]) -> list[str]:
    exe = shutil.which("bwrap") or "bwrap"
    argv = [exe, *_BWRAP_BASE]
    # --tmpfs /tmp hides a workspace that lives under /tmp (pytest's tmp_path does): bind it
    # back, read-only, on top of the tmpfs, with any git directories it depends on.
    from stagecrew.tools.sandbox import hidden_runtime_paths

    for path in [*hidden_runtime_paths(), workspace, *git_dirs]:
        argv += ["--ro-bind", str(path), str(path)]
    argv += ["--unshare-net", "--die-with-parent", "--new-session"]
    if _probe_bwrap()[1]:
        # With its own PID namespace, everything the command forks dies with it. The shell is
        # the namespace's init (--as-pid-1): bwrap's own init would be left a zombie per check
        # where the host's PID 1 does not reap orphans (containers). Timeouts use SIGKILL.
        argv += ["--unshare-pid", "--as-pid-1"]
    argv += ["--chdir", str(workspace), shell, "-c", command]
    return argv


def _copy_regular_files(src: str, dst: str) -> object:
    """copytree's copy function, skipping FIFOs, sockets and devices (opening a FIFO blocks)."""
    if not stat.S_ISREG(os.stat(src).st_mode):
        return dst
    return shutil.copy2(src, dst)


def _shell() -> str:
    return shutil.which("bash") or "/bin/sh"


def _check_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # Stops `git status` and friends from opportunistically rewriting the index.
    env["GIT_OPTIONAL_LOCKS"] = "0"
    return env


class _LiveProcesses:
    """Processes currently running, so an async cancellation can kill them from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.cancelled = False

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.add(proc)
        if self.cancelled:
            _kill_tree(proc)

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        self.cancelled = True
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill_tree(proc)


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's process group and every descendant, including ones that setsid'd.

    Descendants are collected *before* the kill because killing the leader reparents them and
    they can no longer be found through the tree.
    """
    import psutil

    descendants: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        descendants = psutil.Process(proc.pid).children(recursive=True)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _read_tail(out: IO[bytes], max_chars: int) -> tuple[str, bool]:
    out.seek(0, os.SEEK_END)
    size = out.tell()
    budget = max_chars * 4  # worst-case UTF-8 width, so decoding still yields max_chars
    start = max(0, size - budget)
    out.seek(start)
    text = out.read().decode("utf-8", errors="replace")
    truncated = start > 0 or len(text) > max_chars
    if len(text) > max_chars:
        text = text[-max_chars:]
    if truncated:
        text = f"[… earlier output omitted; {size} bytes in total …]\n{text}"
    return text, truncated


def _run_one(
    command: str,
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    timeout_s: float,
    max_output_chars: int,
    mode: SandboxMode,
    live: _LiveProcesses,
) -> CheckResult:
    with tempfile.TemporaryFile(prefix="stagecrew-check-") as out:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,  # a file, not a pipe: no deadlock and no unbounded memory
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return CheckResult(
                command=command,
                exit_code=None,
                passed=False,
                output=f"could not start the command: {exc}",
                duration_s=time.monotonic() - start,
                mode=mode,
            )
        live.add(proc)
        timed_out = False
        try:
            exit_code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_tree(proc)
            proc.wait()
            exit_code = None
        finally:
            live.discard(proc)
        duration = time.monotonic() - start
        # Anything it left running in its group (a background server, say) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, truncated = _read_tail(out, max_output_chars)
    if timed_out:
        output = f"{output}\n[killed: timed out after {timeout_s:g}s]"
    return CheckResult(
        command=command,
        exit_code=exit_code,
        passed=exit_code == 0 and not timed_out,
        output=output,
        output_truncated=truncated,
        duration_s=round(duration, 3),
        timed_out=timed_out,
        mode=mode,
    )


def _run_all(
    commands: Sequence[str],
    workspace: Path,
    timeout_s: float,
    max_output_chars: int,
    live: _LiveProcesses,
) -> list[CheckResult]:
    if not commands:
        return []
    workspace = Path(os.path.realpath(workspace))
    if not workspace.is_dir():
        raise NotADirectoryError(f"verification workspace does not exist: {workspace}")
    env = _check_env()
    shell = _shell()
    results: list[CheckResult] = []
    if bwrap_available():
        git_dirs = _hidden_git_dirs(workspace)
        for command in commands:
            if live.cancelled:
                break
            argv = _bwrap_argv(workspace, command, shell, git_dirs)
            results.append(
                _run_one(command, argv, workspace, env, timeout_s, max_output_chars, "bwrap", live)
            )
        return results
    scratch = Path(tempfile.mkdtemp(prefix="stagecrew-verify-"))
    try:
        copy = scratch / workspace.name
        note = ""
        try:
            shutil.copytree(workspace, copy, symlinks=True, copy_function=_copy_regular_files)
        except shutil.Error as exc:
            # copytree copies everything it can before raising; run on what we have, and say so
            # in every result rather than failing the goal on one unreadable file.
            skipped = [str(err[0]) for err in exc.args[0]] if exc.args else []
            note = f"[note: {len(skipped)} path(s) could not be copied: {', '.join(skipped[:5])}]\n"
        for command in commands:
            if live.cancelled:
                break
            argv = [shell, "-c", command]
            result = _run_one(command, argv, copy, env, timeout_s, max_output_chars, "copy", live)
            if note:
                result.output = note + result.output
            results.append(result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def run_verification(
    commands: Sequence[str],
    workspace: Path,
    timeout_s: float,
    *,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> list[CheckResult]:
    """Run each command read-only against ``workspace``; one ``CheckResult`` per command.

    Blocking. ``timeout_s`` applies to each command separately. Every command runs even after
    one fails, so the judge (and the agent) see the full picture in one round.
    """
    return _run_all(list(commands), workspace, timeout_s, max_output_chars, _LiveProcesses())


async def run_verification_async(
    commands: Sequence[str],
    workspace: Path,
    timeout_s: float,
    *,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> list[CheckResult]:
    """``run_verification`` off the event loop; cancelling the task kills the running command.

    An agent actor must stay responsive while a test suite runs for minutes, and a cancelled
    goal must not leave a test suite running in the background.
    """
    live = _LiveProcesses()
    try:
        return await asyncio.to_thread(
            _run_all, list(commands), workspace, timeout_s, max_output_chars, live
        )
    except asyncio.CancelledError:
        live.kill_all()
        raise
