"""Helpers shared by the MCP tests (imported by name: the test dirs are not packages)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAULT_SERVER = HERE / "fault_server.py"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpFaultServer:
    """The fault server over streamable HTTP on 127.0.0.1, started again whenever it exits
    (as a service manager would), so a reconnect after a crash finds it back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.starts = 0
        self._stop = threading.Event()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._thread = threading.Thread(target=self._keep, daemon=True)

    def _keep(self) -> None:
        while not self._stop.is_set():
            proc = subprocess.Popen(
                [sys.executable, str(FAULT_SERVER), "--http", str(self.port)],
                stderr=subprocess.DEVNULL,
            )
            self._procs.append(proc)
            self.starts += 1
            while proc.poll() is None and not self._stop.is_set():
                time.sleep(0.05)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the HTTP fault server did not come up")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
