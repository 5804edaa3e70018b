"""bash, bash_output, kill_shell: running commands for the model.

Every command runs in its own session (process group) registered in ``ctx.processes``, so a
timeout, a cancelled agent or ``kill_shell`` can take down the whole tree it started, not just
the shell. The working directory persists between calls like a terminal's, but never outside
the workspace. In read-only (plan) mode a command only runs through the sandbox module's argv
(bubblewrap or an allowlist); if that module is missing or refuses, nothing runs. In build mode
it runs under the agent's ``ctx.sandbox`` (bubblewrap with the workspace writable and the deny
rules' paths masked or read-only; see ``sandbox.py``) where bubblewrap works.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from stagecrew.envutil import restored_env
from stagecrew.tools.base import Tool, ToolContext, ToolResult
from stagecrew.tools.lifetime import die_with_parent_argv
from stagecrew.tools.paths import is_within

if TYPE_CHECKING:
    from stagecrew.tools.sandbox import BuildSandbox

DEFAULT_TIMEOUT_MS = 120_000
MAX_TIMEOUT_MS = 600_000
OUTPUT_LIMIT = 30_000
KILL_GRACE_S = 1.0  # between SIGTERM and SIGKILL
DRAIN_GRACE_S = 1.0  # how long output may keep flowing after the shell itself exited
_FAST_POLL_S = 0.05  # how long a command's exit is polled every millisecond
BASH = "/bin/bash"


def tool_subprocess_env(
    base: Mapping[str, str] | None = None, hidden: Iterable[str] = ()
) -> dict[str, str]:
    """The environment the *user* would give a command: ``base`` (or ours) minus what the runtime
    injected for its own use.

    stagecrew's runtime may set proxy variables so Ray and the LLM client reach the outside; a
    command the model runs (pip, curl, tests) must see the user's original setup instead.
    ``STAGECREW_INJECTED_ENV`` holds ``{VAR: original value or null}``; we restore the originals
    (null means the user had none) and drop the marker itself. When an explicit ``base`` lacks
    the marker, our own process's marker still applies, but only to variables that still hold
    the injected value (so a value the caller chose on purpose is kept). ``hidden`` names are
    removed (the session's model keys: ``ToolContext.hidden_env``).
    """
    if base is None:
        env = restored_env(os.environ)
    else:
        env = restored_env(base, inherited_from=os.environ)
    for name in hidden:
        env.pop(name, None)
    return env


def _command_env(ctx: ToolContext) -> dict[str, str]:
    env = tool_subprocess_env(ctx.env, ctx.hidden_env)
    # Nothing can answer a prompt or page through output: make tools that would, not.
    env.setdefault("PAGER", "cat")
    env.setdefault("GIT_PAGER", "cat")
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    return env


# --------------------------------------------------------------------------------------------
# Process-tree helpers


def _descendants(pid: int) -> list[Any]:
    """Children found through the tree, including ones that escaped into a session of their own."""
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _signal_tree(pgid: int, procs: list[Any], sig: int) -> None:
    import psutil

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def group_alive(pgid: int) -> bool:
    """Whether anything in the process group still runs. Zombies do not count: a killed
    process whose parent already exited waits for init to reap it, which can take a moment."""
    import psutil

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _alive(procs: list[Any]) -> bool:
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


async def _terminate(pgid: int, procs: list[Any], leader: Any | None) -> None:
    """SIGTERM the tree, give it ``KILL_GRACE_S`` to clean up, then SIGKILL what is left."""
    _signal_tree(pgid, procs, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline:
        leader_done = leader is None or leader.returncode is not None
        if leader_done and not group_alive(pgid) and not _alive(procs):
            break
        await asyncio.sleep(0.05)
    _signal_tree(pgid, procs, signal.SIGKILL)


async def _wait_exit(proc: Any, timeout: float) -> bool:
    """Wait for the shell itself to exit; False on timeout.

    Not ``proc.wait()``: since 3.11.x that also waits for the pipes to close, which a
    ``server &`` holding stdout would delay until the timeout. ``returncode`` is set as soon as
    the child watcher sees the exit, so poll it: every millisecond for the first
    ``_FAST_POLL_S`` (a doubling delay would see a 4 ms command, bash under the sandbox, only
    at 6 or 14 ms), then less and less often.
    """
    started = time.monotonic()
    deadline = started + timeout
    delay = 0.001
    while proc.returncode is None:
        now = time.monotonic()
        if now >= deadline:
            return False
        await asyncio.sleep(min(delay, deadline - now))
        if now - started > _FAST_POLL_S:
            delay = min(delay * 2, 0.05)
    return True


def _release(ctx: ToolContext, pgid: int) -> None:
    """Forget the group once nothing in it is left (a `cmd &` may outlive the shell)."""
    if not group_alive(pgid):
        ctx.processes.discard(pgid)


# --------------------------------------------------------------------------------------------
# Output capture


class OutputCapture:
    """Keeps the head and the tail of a stream, so a flood of output costs bounded memory and
    the model still sees how it started and how it ended."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.limit:
                del self.tail[: len(self.tail) - self.limit]

    def text(self) -> str:
        half = self.limit // 2
        dropped = self.total - len(self.head) - len(self.tail)
        if dropped == 0:
            whole = (self.head + self.tail).decode("utf-8", errors="replace")
            if len(whole) <= self.limit:
                return whole
            cut = len(whole) - 2 * half
            return (
                whole[:half]
                + f"\n\n[... {cut:,} characters of output cut from the middle ...]\n\n"
                + whole[-half:]
            )
        head = self.head.decode("utf-8", errors="replace")[:half]
        tail = self.tail.decode("utf-8", errors="replace")[-half:]
        return (
            head
            + f"\n\n[... output cut: {self.total:,} bytes in total; showing the first and last "
            f"{half:,} characters ...]\n\n" + tail
        )


async def _pump(stream: asyncio.StreamReader, capture: OutputCapture) -> None:
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        capture.feed(chunk)


# --------------------------------------------------------------------------------------------
# Working directory and the sandbox


def _effective_cwd(ctx: ToolContext) -> tuple[Path, str | None]:
    cwd = ctx.cwd or ctx.workspace
    if is_within(os.path.realpath(cwd), ctx.workspace) and os.path.isdir(cwd):
        return Path(cwd), None
    ctx.cwd = ctx.workspace
    note = (
        f"[the previous working directory {cwd} is gone or outside the workspace; running in "
        f"{ctx.workspace}]"
    )
    return ctx.workspace, note


def _adopt_cwd(ctx: ToolContext, reported: str) -> str | None:
    """Keep the directory the command ended in, if it is a directory inside the workspace."""
    if not reported:
        return None
    real = os.path.realpath(reported)
    before = ctx.cwd
    if is_within(real, ctx.workspace) and os.path.isdir(real):
        ctx.cwd = Path(real)
        if ctx.cwd != before:
            rel = os.path.relpath(real, ctx.workspace)
            return f"[working directory is now {'the workspace root' if rel == '.' else rel}]"
        return None
    ctx.cwd = ctx.workspace
    return (
        f"[the command ended in {reported}, outside the workspace; the working directory was "
        f"reset to {ctx.workspace}]"
    )


class SandboxUnavailable(Exception):
    """No acceptable way to confine the command (read-only mode, or ``sandbox.mode:
    required``): it must not run."""


def _sandbox_module() -> Any:
    """The sandbox module, loaded on first use; its failure to load is reported, not raised
    (a command must then refuse to run, never run unconfined by accident)."""
    return importlib.import_module("stagecrew.tools.sandbox")


def readonly_command_argv(command: str, ctx: ToolContext) -> list[str]:
    """Ask ``stagecrew.tools.sandbox`` for the confined argv; never fall back to running freely."""
    try:
        sandbox = _sandbox_module()
    except Exception as exc:
        raise SandboxUnavailable(
            "bash is not available in read-only (plan) mode here: the sandbox could not be "
            f"loaded ({type(exc).__name__}: {exc}), and commands never run unsandboxed in this "
            "mode. Use read, grep, glob and ls to inspect the workspace."
        ) from exc
    refused = getattr(sandbox, "SandboxRefused", None)
    try:
        argv = sandbox.readonly_argv(command, ctx)
    except Exception as exc:
        if isinstance(refused, type) and isinstance(exc, refused):
            raise SandboxUnavailable(f"Refused in read-only (plan) mode: {exc}") from exc
        raise SandboxUnavailable(
            f"the read-only sandbox failed ({type(exc).__name__}: {exc}); the command was not run"
        ) from exc
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise SandboxUnavailable("the read-only sandbox returned no command; nothing was run")
    return argv


def build_confinement(ctx: ToolContext, env: Mapping[str, str]) -> BuildSandbox | None:
    """The build-mode sandbox for one command, or None to run it plainly (no policy, mode
    ``off``, or no bubblewrap under ``auto``). A sandbox that cannot be set up refuses the
    command: the person chose to confine commands, so none runs unconfined by accident.
    Blocking: call it off the event loop."""
    if ctx.sandbox is None or ctx.sandbox.mode == "off":
        return None
    try:
        sandbox = _sandbox_module()
    except Exception as exc:
        raise SandboxUnavailable(_setup_failed("loaded", exc)) from exc
    try:
        confine: BuildSandbox | None = sandbox.build_sandbox(ctx, env)
    except sandbox.SandboxMissing as exc:
        raise SandboxUnavailable(str(exc)) from exc
    except Exception as exc:
        raise SandboxUnavailable(_setup_failed("set up", exc)) from exc
    return confine


def _setup_failed(what: str, exc: Exception) -> str:
    return (
        f"the sandbox could not be {what} ({type(exc).__name__}: {exc}); the command was not "
        "run (sandbox.mode: off runs commands without it)"
    )


_EROFS = "Read-only file system"


def _sandbox_hint(output: str, code: int) -> str | None:
    """Why a sandboxed command failed on a read-only path, for the model to adapt (tools
    that write their own files outside the workspace fail under the sandbox)."""
    if code == 0 or _EROFS not in output:
        return None
    return (
        "[sandbox: only the workspace and /tmp are writable (not .git/hooks, .git/config, "
        ".stagecrew, .claude, or paths under deny rules); sandbox.writable in the config adds "
        "paths]"
    )


def _traced_argv(command: str, cwd: Path, confine: BuildSandbox | None) -> tuple[list[str], str]:
    """``bash -c command`` with an EXIT trap that writes the final working directory to a
    marker file, and that file's host path. Under the sandbox the marker lives in the
    agent's private /tmp, the one place outside the workspace the command may write."""
    fd, pwd_file = tempfile.mkstemp(
        prefix="sc-pwd-", dir=confine.tmp_dir if confine is not None else None
    )
    os.close(fd)
    seen_as = confine.inside(Path(pwd_file)) if confine is not None else pwd_file
    # An EXIT trap also runs after `exit N` and syntax errors; a command that replaces it
    # (or execs) just leaves the working directory where it was.
    trap = f'__sc_ec=$?; printf %s "$PWD" > {shlex.quote(seen_as)}; exit $__sc_ec'
    inner = [BASH, "-c", f"trap {shlex.quote(trap)} EXIT\n{command}"]
    return (confine.argv(inner, cwd) if confine is not None else inner), pwd_file


# --------------------------------------------------------------------------------------------
# bash


class BashArgs(BaseModel):
    command: str = Field(min_length=1, description="The command line to run with /bin/bash.")
    timeout: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TIMEOUT_MS,
        description=f"Timeout in milliseconds (default {DEFAULT_TIMEOUT_MS}, max "
        f"{MAX_TIMEOUT_MS}).",
    )
    description: str | None = Field(
        default=None, description="Five to ten words on what the command does, for the user."
    )
    run_in_background: bool = Field(
        default=False,
        description="Start it in the background and return at once (servers, watchers, long "
        "builds); read its output later with bash_output.",
    )


def _status_line(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"[killed by {name}]"
    return f"[exit code {code}]"


async def run_foreground(ctx: ToolContext, command: str, timeout_s: float) -> ToolResult:
    """Run one command to completion (or timeout); see the module docstring for the contract."""
    cwd, cwd_note = _effective_cwd(ctx)
    env = _command_env(ctx)
    pwd_file: str | None = None
    confine: BuildSandbox | None = None
    try:
        # The sandbox may probe bwrap and walk the workspace; keep that off the event loop.
        if ctx.read_only:
            argv = await asyncio.to_thread(readonly_command_argv, command, ctx)
        else:
            confine = await asyncio.to_thread(build_confinement, ctx, env)
            argv, pwd_file = _traced_argv(command, cwd, confine)
    except SandboxUnavailable as exc:
        return ToolResult(content=str(exc), is_error=True)
    argv, preexec = die_with_parent_argv(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
        )
    except OSError as exc:
        if pwd_file:
            os.unlink(pwd_file)
        return ToolResult(content=f"Could not start the command: {exc}", is_error=True)
    pgid = proc.pid
    ctx.processes.add(pgid)
    assert proc.stdout is not None
    capture = OutputCapture()
    reader = asyncio.create_task(_pump(proc.stdout, capture))
    started = time.monotonic()
    timed_out = False
    leftovers = False
    try:
        if not await _wait_exit(proc, timeout_s):
            timed_out = True
            await _terminate(pgid, _descendants(pgid), proc)
            await _wait_exit(proc, 5)
        try:
            await asyncio.wait_for(asyncio.shield(reader), DRAIN_GRACE_S)
        except TimeoutError:
            # Something the command started with `&` still holds the output open; it would block
            # once the pipe fills. Stop the group; run_in_background is the way to keep it.
            leftovers = True
            await _terminate(pgid, _descendants(pgid), None)
            try:
                await asyncio.wait_for(asyncio.shield(reader), 2)
            except TimeoutError:
                reader.cancel()
    except asyncio.CancelledError:
        _signal_tree(pgid, _descendants(pgid), signal.SIGKILL)
        reader.cancel()
        with contextlib.suppress(BaseException):
            await _wait_exit(proc, 2)
        _release(ctx, pgid)
        if pwd_file:
            with contextlib.suppress(OSError):
                os.unlink(pwd_file)
        raise
    _release(ctx, pgid)
    elapsed = time.monotonic() - started
    notes = [cwd_note] if cwd_note else []
    if pwd_file:
        try:
            reported = Path(pwd_file).read_text(errors="replace").strip()
        except OSError:
            reported = ""
        with contextlib.suppress(OSError):
            os.unlink(pwd_file)
        if not timed_out:
            note = _adopt_cwd(ctx, reported)
            if note:
                notes.append(note)
    output = capture.text()
    code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    parts = [output.rstrip("\n") if output.strip() else "(no output)"]
    if timed_out:
        parts.append(
            f"[timed out after {timeout_s:g} s: the command and everything it started were "
            "killed. Use a longer timeout, or run_in_background for long-running commands]"
        )
    else:
        parts.append(_status_line(code))
        hint = _sandbox_hint(output, code) if confine is not None else None
        if hint:
            parts.append(hint)
    if leftovers:
        parts.append(
            "[background processes it started kept the output open and were stopped; use "
            "run_in_background=true for servers and watchers]"
        )
    parts += notes
    return ToolResult(
        content="\n".join(parts),
        is_error=timed_out,
        metadata={
            "exit_code": None if timed_out else code,
            "timed_out": timed_out,
            "duration_s": round(elapsed, 3),
            "cwd": str(ctx.cwd),
            "output_bytes": capture.total,
            "sandboxed": confine is not None or ctx.read_only,
        },
    )


@dataclass
class BackgroundJob:
    job_id: str
    command: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float
    offset: int = 0
    own_log: bool = True

    @property
    def pgid(self) -> int:
        return self.popen.pid


def _jobs(ctx: ToolContext) -> dict[str, BackgroundJob]:
    jobs: dict[str, BackgroundJob] = ctx.state.setdefault("bash_jobs", {})
    return jobs


async def _start_background(ctx: ToolContext, command: str) -> ToolResult:
    cwd, cwd_note = _effective_cwd(ctx)
    env = _command_env(ctx)
    try:
        confine = await asyncio.to_thread(build_confinement, ctx, env)
    except SandboxUnavailable as exc:
        return ToolResult(content=str(exc), is_error=True)
    seq = int(ctx.state.get("bash_job_seq", 0)) + 1
    ctx.state["bash_job_seq"] = seq
    job_id = f"bash_{seq}"
    if ctx.session_dir is not None:
        log_dir = Path(ctx.session_dir) / "bash-jobs"
    else:
        log_dir = Path(tempfile.gettempdir()) / f"stagecrew-jobs-{os.getuid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    agent = re.sub(r"[^A-Za-z0-9_.-]", "_", ctx.agent_id)
    log_path = log_dir / f"{agent}-{job_id}-{secrets.token_hex(3)}.log"
    inner = [BASH, "-c", command]
    try:
        argv, preexec = die_with_parent_argv(
            confine.argv(inner, cwd) if confine is not None else inner
        )
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=preexec,
            )
    except OSError as exc:
        return ToolResult(content=f"Could not start the command: {exc}", is_error=True)
    ctx.processes.add(popen.pid)
    _jobs(ctx)[job_id] = BackgroundJob(job_id, command, popen, log_path, time.time())
    lines = [
        f"Started background job {job_id} (pid {popen.pid}).",
        f'Read its output with bash_output(bash_id="{job_id}"); stop it with '
        f'kill_shell(shell_id="{job_id}").',
    ]
    if cwd_note:
        lines.append(cwd_note)
    return ToolResult(content="\n".join(lines), metadata={"bash_id": job_id, "pid": popen.pid})


class Bash(Tool):
    name = "bash"
    description = (
        "Run a shell command with /bin/bash in the workspace and return its combined "
        "stdout+stderr and exit code. The working directory persists between calls (a `cd` "
        "sticks) but always stays inside the workspace. Timeout defaults to "
        f"{DEFAULT_TIMEOUT_MS // 1000} s (timeout is in ms, max {MAX_TIMEOUT_MS // 1000} s); on "
        "timeout the command and everything it started are killed. Output over "
        f"{OUTPUT_LIMIT:,} characters is cut in the middle. A non-zero exit code is reported, "
        "not treated as a failure. stdin is closed: never run interactive commands. Set "
        "run_in_background for servers and watchers, then use bash_output and kill_shell. "
        "Prefer read/grep/glob/ls/edit over cat/grep/find/sed. Where the sandbox is on, "
        "commands can write only the workspace and /tmp (not .git/hooks, .git/config or paths "
        "the permission rules protect), and a `cmd &` ends with the call. In read-only (plan) "
        "mode commands run in a sandbox that cannot change files (a `cd` does not persist "
        "there) and background jobs are refused."
    )
    Args = BashArgs
    # In read-only mode it runs only through the sandbox (or not at all); see run().
    sandboxable = True

    async def run(self, args: BashArgs, ctx: ToolContext) -> ToolResult:
        if args.run_in_background:
            if ctx.read_only:
                return ToolResult(
                    content="run_in_background is not allowed in read-only (plan) mode.",
                    is_error=True,
                )
            return await _start_background(ctx, args.command)
        timeout_ms = args.timeout or DEFAULT_TIMEOUT_MS
        result = await run_foreground(ctx, args.command, timeout_ms / 1000)
        if args.description:
            result.metadata["description"] = args.description
        return result


# --------------------------------------------------------------------------------------------
# bash_output / kill_shell


def _unknown_job(ctx: ToolContext, job_id: str) -> ToolResult:
    known = ", ".join(sorted(_jobs(ctx))) or "none"
    return ToolResult(content=f"No background job {job_id!r}. Known jobs: {known}.", is_error=True)


def _read_new(job: BackgroundJob, limit: int = OUTPUT_LIMIT) -> str:
    try:
        with open(job.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            capture = OutputCapture(limit)
            f.seek(job.offset)
            while f.tell() < end:
                chunk = f.read(min(1 << 20, end - f.tell()))
                if not chunk:
                    break
                capture.feed(chunk)
            job.offset = end
    except FileNotFoundError:
        return ""
    return capture.text()


def _job_status(job: BackgroundJob) -> str:
    code = job.popen.poll()
    elapsed = int(time.time() - job.started)
    if code is None:
        return f"running (pid {job.popen.pid}, started {elapsed} s ago)"
    return f"exited: {_status_line(code)[1:-1]}"


class BashOutputArgs(BaseModel):
    bash_id: str = Field(description="The id run_in_background returned, e.g. 'bash_1'.")
    filter: str | None = Field(
        default=None,
        description="Optional regex: only new output lines matching it are shown (the others "
        "are consumed and not shown again).",
    )


class BashOutput(Tool):
    name = "bash_output"
    description = (
        "Read the output a background bash job (started with run_in_background) produced "
        "since the last call, plus whether it is still running or its exit code. Optional "
        "filter is a regex that keeps only matching lines."
    )
    Args = BashOutputArgs
    read_only = True

    async def run(self, args: BashOutputArgs, ctx: ToolContext) -> ToolResult:
        job = _jobs(ctx).get(args.bash_id)
        if job is None:
            return _unknown_job(ctx, args.bash_id)
        regex = None
        if args.filter:
            try:
                regex = re.compile(args.filter)
            except re.error as exc:
                return ToolResult(
                    content=f"Invalid filter regex {args.filter!r}: {exc}", is_error=True
                )
        status = _job_status(job)  # before reading, so "exited" means the output is complete
        new = await asyncio.to_thread(_read_new, job)
        if regex is not None:
            new = "\n".join(line for line in new.splitlines() if regex.search(line))
        if job.popen.poll() is not None:
            _release(ctx, job.pgid)
        body = new.rstrip("\n") if new.strip() else "(no new output)"
        return ToolResult(
            content=f"[{job.job_id}: {status}]\n{body}",
            metadata={"bash_id": job.job_id, "exit_code": job.popen.poll()},
        )


class KillShellArgs(BaseModel):
    shell_id: str = Field(description="The id of the background job to stop, e.g. 'bash_1'.")


class KillShell(Tool):
    name = "kill_shell"
    description = (
        "Stop a background bash job and everything it started (SIGTERM, then SIGKILL after "
        f"{KILL_GRACE_S:g} s). Its remaining output stays readable with bash_output."
    )
    Args = KillShellArgs

    async def run(self, args: KillShellArgs, ctx: ToolContext) -> ToolResult:
        job = _jobs(ctx).get(args.shell_id)
        if job is None:
            return _unknown_job(ctx, args.shell_id)
        if job.popen.poll() is not None and not group_alive(job.pgid):
            _release(ctx, job.pgid)
            return ToolResult(
                content=f"{job.job_id} had already {_job_status(job)}; nothing to stop.",
                metadata={"exit_code": job.popen.returncode},
            )
        procs = _descendants(job.pgid)
        _signal_tree(job.pgid, procs, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            if job.popen.poll() is not None and not group_alive(job.pgid) and not _alive(procs):
                break
            await asyncio.sleep(0.05)
        _signal_tree(job.pgid, procs, signal.SIGKILL)
        await asyncio.to_thread(job.popen.wait)
        _release(ctx, job.pgid)
        return ToolResult(
            content=f"Stopped {job.job_id} ({job.command[:80]}): {_job_status(job)}.",
            metadata={"exit_code": job.popen.returncode},
        )
