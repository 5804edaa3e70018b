"""Fixtures for the MCP client tests: real servers as processes, and a check after every test
that none of them is left running."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import psutil
import pytest
from mcputil import FAULT_SERVER, HttpFaultServer

# What a leaked MCP server looks like in a command line (the HTTP fixture's server is the
# fixture's own and is ended by it).
SERVER_MARKS = ("stagecrew-mcp:", "mcp-server-", "fault_server.py", "server-filesystem")


def _servers_left() -> list[str]:
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if any(mark in cmdline for mark in SERVER_MARKS) and "--http" not in cmdline:
            out.append(f"{proc.pid}: {cmdline[:160]}")
    return out


@pytest.fixture(autouse=True)
def no_server_left() -> Iterator[None]:
    """Every test ends with no MCP server process of its own left (stop() is reliable)."""
    yield
    deadline = time.monotonic() + 10
    left = _servers_left()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _servers_left()
    assert not left, f"MCP server processes left behind: {left}"


@pytest.fixture
def fault_entry() -> dict[str, object]:
    """A ``.mcp.json`` entry for the fault server over stdio."""
    return {"command": sys.executable, "args": [str(FAULT_SERVER)]}


@pytest.fixture
def http_fault() -> Iterator[HttpFaultServer]:
    server = HttpFaultServer()
    server.start()
    yield server
    server.stop()
