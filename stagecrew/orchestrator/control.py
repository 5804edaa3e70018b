"""The control channel between the CLI and the supervisor: JSON lines over loopback TCP.

Why not a Ray call: the CLI would have to import ray (about 1 s) and attach to the head on
every command, which alone breaks the ≤ 1 s budget from ``crew run`` to the first model
request. The supervisor instead serves a tiny line protocol on 127.0.0.1 with a random token
kept in the user-only head record; the CLI needs nothing but the standard library. Envelopes
travel in their log JSON, so what the CLI reads live is byte for byte what the log holds.

Request: one JSON object ``{"op": ..., "token": ..., ...}``. Reply: one JSON object
(``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``), or, for streaming ops, a sequence
of lines ending with ``{"end": true, ...}``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any


class ControlError(Exception):
    """The supervisor answered with an error, or could not be reached."""


class ControlClient:
    def __init__(self, host: str, port: int, token: str, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.timeout = timeout

    def _connect(self, timeout: float | None) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise ControlError(
                f"cannot reach the supervisor at {self.host}:{self.port}: {exc}"
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _send(self, sock: socket.socket, op: str, args: dict[str, Any]) -> None:
        payload = {"op": op, "token": self.token, **args}
        sock.sendall(json.dumps(payload).encode() + b"\n")

    def call(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """One request, one reply."""
        with self._connect(timeout or self.timeout) as sock:
            sock.settimeout(timeout or self.timeout)
            self._send(sock, op, args)
            with sock.makefile("rb") as fh:
                line = fh.readline()
        if not line:
            raise ControlError(f"the supervisor closed the connection during '{op}'")
        reply = json.loads(line)
        if not reply.get("ok", False):
            raise ControlError(reply.get("error", f"'{op}' failed"))
        return reply

    def stream(self, op: str, **args: Any) -> Iterator[dict[str, Any]]:
        """A streaming request: yields each line until the ``end`` line (inclusive)."""
        sock = self._connect(self.timeout)
        sock.settimeout(None)
        try:
            self._send(sock, op, args)
            with sock.makefile("rb") as fh:
                for line in fh:
                    msg = json.loads(line)
                    if msg.get("ok") is False:
                        raise ControlError(msg.get("error", f"'{op}' failed"))
                    yield msg
                    if msg.get("end"):
                        return
        finally:
            sock.close()

    def ping(self, timeout: float = 0.5) -> dict[str, Any]:
        return self.call("ping", timeout=timeout)
