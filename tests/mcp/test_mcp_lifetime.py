"""Server processes end with their owner: at stop(), and when the owner is killed with -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest
from mcputil import BIN, FAULT_SERVER, HERE

pytestmark = pytest.mark.timeout(120)


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_servers_die_when_their_owner_is_killed() -> None:
    """Direct servers, and a real server two levels down behind a shell wrapper (as with npx
    or uvx), all end when the process holding the manager is SIGKILLed."""
    wrapped = f"{sys.executable} {FAULT_SERVER}; true"  # `; true`: sh must fork, not exec
    servers = {
        "fault": {"command": sys.executable, "args": [str(FAULT_SERVER)]},
        "time": {"command": str(BIN / "mcp-server-time")},
        "wrapped": {"command": "/bin/sh", "args": ["-c", wrapped]},
    }
    holder = subprocess.Popen(
        [sys.executable, str(HERE / "mcp_holder.py"), json.dumps(servers)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        report = json.loads(holder.stdout.readline())
        assert report["status"] == ["running", "running", "running"]
        pids = report["pids"]
        # launcher + server for each, and the wrapped server below its shell
        assert len(pids) >= 7, pids
        assert _alive(pids) == pids
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 10
        while _alive(pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(pids) == [], [psutil.Process(p).cmdline() for p in _alive(pids)]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
