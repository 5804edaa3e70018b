"""Running one hook command: ``bash -c``, JSON on stdin, killed whole at its timeout.

A hook is someone's script, so it may hang, start children, or ignore its input. It runs as
Claude Code runs it (through a shell, in the project root) but the way stagecrew runs every
command (``tools/shell.py``): in its own session, so a timeout takes down the whole process
group, plus the descendants that escaped into sessions of their own (found through the tree
while the hook still lives); with ``die_with_parent_argv``, so a hook never outlives the agent.
Nothing here raises for the hook's failure: the result says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagecrew.tools.lifetime import die_with_parent_argv

BASH = "/bin/bash"
OUTPUT_LIMIT = 1 << 20  # bytes kept per stream; the rest is read and dropped
KILL_GRACE_S = 1.0  # between SIGTERM and SIGKILL at a timeout
DRAIN_GRACE_S = 1.0  # how long output may keep flowing after the shell itself exited


@dataclass(frozen=True)
class ProcessResult:
    """What a hook process did. ``exit_code`` is None when it never ran or was killed."""

    exit_code: int | None
    stdout: str
    stderr: str
    duration_ms: int
    timed_out: bool = False
    # Why it could not be started, or what was done to it (a sentence), else "".
    error: str = ""


class _Capture:
    """Reads a stream to its end, keeping the first ``OUTPUT_LIMIT`` bytes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.dropped = 0

    async def pump(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            room = OUTPUT_LIMIT - len(self.data)
            self.data += chunk[:room]
            self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        out = self.data.decode("utf-8", errors="replace")
        if self.dropped:
            out += f"\n[... {self.dropped:,} more bytes of output dropped ...]"
        return out


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _signal_all(pgid: int, procs: list[Any], sig: int) -> None:
    import psutil

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _any_alive(pgid: int, procs: list[Any]) -> bool:
    import psutil

    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        pass
    except PermissionError:
        return True
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


async def _kill_tree(pgid: int, procs: list[Any], *, grace: float) -> None:
    """SIGTERM everything, give it ``grace`` seconds to clean up, then SIGKILL what is left."""
    if grace > 0:
        _signal_all(pgid, procs, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _any_alive(pgid, procs):
            await asyncio.sleep(0.02)
    _signal_all(pgid, procs, signal.SIGKILL)


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Wait for the shell itself to exit; False at the timeout.

    Polls ``returncode`` rather than awaiting ``proc.wait()``, which also waits for the
    pipes to close (a ``cmd &`` holding stdout would then stretch every hook to its timeout).
    The first polls are a millisecond apart, so a quick hook costs no more than it takes.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while proc.returncode is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.25, 0.05)
    return True


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    """Write the input and close stdin; a hook that exits without reading it is fine."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        proc.stdin.close()


async def run_command(
    command: str, stdin: bytes, *, cwd: Path, env: Mapping[str, str], timeout_s: float
) -> ProcessResult:
    """Run ``command`` with ``bash -c``; kill its whole tree at ``timeout_s``. Never raises
    for the command's sake (a cancelled caller still gets ``CancelledError``, after the tree
    is killed)."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    argv, preexec = die_with_parent_argv([BASH, "-c", command])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            preexec_fn=preexec,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return ProcessResult(None, "", "", elapsed_ms(), error=f"could not be started: {exc}")
    pgid = proc.pid
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Capture(), _Capture()
    tasks = [
        asyncio.create_task(_feed(proc, stdin)),
        asyncio.create_task(out.pump(proc.stdout)),
        asyncio.create_task(err.pump(proc.stderr)),
    ]
    timed_out = False
    note = ""
    try:
        if not await _wait_exit(proc, timeout_s):
            timed_out = True
            note = f"timed out after {timeout_s:g} s; it and every process it started were killed"
            await _kill_tree(pgid, _descendants(pgid), grace=KILL_GRACE_S)
            await _wait_exit(proc, 5)
        pipes = asyncio.gather(*tasks[1:], return_exceptions=True)
        try:
            await asyncio.wait_for(asyncio.shield(pipes), DRAIN_GRACE_S)
        except TimeoutError:
            # Something the hook left running (``cmd &``) still holds its output open.
            await _kill_tree(pgid, [], grace=0)
            if not note:
                note = "left processes holding its output open; they were killed"
            try:
                await asyncio.wait_for(asyncio.shield(pipes), 2)
            except TimeoutError:
                for task in tasks:
                    task.cancel()
    except asyncio.CancelledError:
        _signal_all(pgid, _descendants(pgid), signal.SIGKILL)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await _wait_exit(proc, 2)
        raise
    finally:
        tasks[0].cancel()
    code = None if timed_out else proc.returncode
    return ProcessResult(code, out.text(), err.text(), elapsed_ms(), timed_out, note)
