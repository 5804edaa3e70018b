"""A tool's process dies with the process that started it, even under ``kill -9``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from stagecrew.tools.lifetime import die_with_parent

PARENT = """
import subprocess, sys, time
from stagecrew.tools.lifetime import die_with_parent, die_with_parent_argv
argv, preexec = {how}
child = subprocess.Popen(argv, start_new_session=True, preexec_fn=preexec)
print(child.pid, flush=True)
time.sleep(300)
"""


def _run_parent(tmp_path: Path, how: str) -> tuple[subprocess.Popen[str], int]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(how=how))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def _running_sleep(pid: int, timeout: float = 10.0) -> None:
    """Wait until the child runs ``sleep`` itself: the death signal is asked for (by setpriv
    or the preexec hook) before that exec, so a parent killed earlier proves nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).cmdline()[:1] == ["sleep"]:
                return
        except (psutil.NoSuchProcess, IndexError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"child {pid} never ran sleep")


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(die_with_parent() is None, reason="no PR_SET_PDEATHSIG on this platform")
@pytest.mark.parametrize(
    "how",
    [
        'die_with_parent_argv(["sleep", "300"])',  # setpriv where it exists (no fork penalty)
        '(["sleep", "300"], die_with_parent())',  # the preexec fallback
    ],
)
def test_the_child_dies_with_a_sigkilled_parent(tmp_path: Path, how: str) -> None:
    parent, child = _run_parent(tmp_path, how)
    _running_sleep(child)
    parent.kill()
    parent.wait()
    assert _gone(child)


def test_without_it_the_child_would_be_orphaned(tmp_path: Path) -> None:
    """The control: the same set-up without the preexec leaves the child running."""
    parent, child = _run_parent(tmp_path, '(["sleep", "300"], None)')
    parent.kill()
    parent.wait()
    try:
        assert not _gone(child, timeout=0.5)
    finally:
        psutil.Process(child).kill()
