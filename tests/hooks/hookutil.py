"""Plain helpers for the hook tests: executable scripts, configs, process checks."""

from __future__ import annotations

import contextlib
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from stagecrew.hooks import HookRunner

PY = sys.executable

# make_runner(hooks, **HookRunner keyword arguments) -> HookRunner (the fixture in conftest).
MakeRunner = Callable[..., HookRunner]


def write_script(path: Path, body: str) -> Path:
    """An executable script (its first line is its interpreter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def hooks_for(event: str, *commands: str | dict[str, Any], matcher: str = "") -> dict[str, Any]:
    """``{"PreToolUse": [{"matcher": ..., "hooks": [...]}]}`` for one matcher group."""
    hooks = [c if isinstance(c, dict) else {"type": "command", "command": c} for c in commands]
    return {event: [{"matcher": matcher, "hooks": hooks}]}


def gone(pid: int, timeout: float = 5.0) -> bool:
    """The process has exited (a zombie waiting for init to reap it counts as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def read_pid(path: Path, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        time.sleep(0.02)
    raise AssertionError(f"{path} was never written")


def kill_if_alive(*pids: int) -> None:
    """Test clean-up, so a failing assertion does not leave a sleeper behind (only the
    scripts' own kinds of process: a pid may have been reused by then)."""
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.name() in ("sleep", "bash") and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()


async def await_pid(path: Path, timeout: float = 5.0) -> int:
    """``read_pid`` that lets the event loop run (the hook writing the file needs it)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} was never written")
