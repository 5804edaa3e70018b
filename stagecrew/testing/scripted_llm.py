"""A scripted OpenAI-compatible model server for tests and demos.

Every model behaviour in the test suite comes through this real HTTP server and litellm, never a
monkeypatched function: the gateway's retries, streaming reassembly, timeouts and error mapping
are exercised exactly as against a hosted provider, only deterministic and offline.

A *script* is a list of turns served in order, or a dict of such lists keyed by the request's
``model`` field (``"*"`` for every model without its own queue) because subagents, the judge
and parallel candidates hit one server at the same time. A turn is served to the first request
whose ``when`` condition it matches, so concurrent agents get deterministic answers.

Turn fields (a dict or a :class:`Turn`):

``text``, ``reasoning``
    assistant content, and ``reasoning_content`` as thinking models stream it.
``tool_calls``
    ``[{"name": ..., "arguments": {...}}]`` or ``{"name": ..., "raw_arguments": "<verbatim>"}``,
    optional ``"id"``. Streamed the OpenAI way: one delta with id and name, then argument
    fragments carrying the same ``index``.
``finish_reason``
    default ``"tool_calls"`` with tool calls, else ``"stop"``.
``usage``
    ``prompt_tokens``/``completion_tokens``/``cached_tokens``; missing counts are estimated at
    about four characters per token.
``delay``, ``chunk_delay``, ``chunk_size``
    seconds before the first byte, seconds between stream chunks, characters per chunk (by
    default every text and argument string is cut into about eight pieces).
``status``, ``error_message``, ``error_type``, ``error_code``, ``retry_after``, ``headers``
    answer with an OpenAI-style HTTP error (429, 500, 503, 400 ``context_length_exceeded`` ...).
``hang``
    ``true``: hold the connection without answering until the client goes away, the server
    closes or ``hang_cap`` (120 s) passes; an int N on a stream: stall after N chunks.
``drop``
    ``true``: close the connection after about half the chunks; an int N: after N chunks
    (0: close before any byte).
``drop_mode``
    how a stream is dropped: ``"reset"`` (default) cuts the connection inside the chunked body,
    so the client sees an incomplete response; ``"eof"`` ends the HTTP response properly at the
    drop point, so the client sees a well-formed body whose SSE stream just stops, without a
    ``finish_reason`` or ``[DONE]`` (as when a proxy or a crashing worker closes the stream).
``when``
    ``{"contains": s}`` (last message), ``{"any_contains": s}`` (any message),
    ``{"system_contains": s}`` (system prompt); all given conditions must hold.
``repeat``
    how many times the turn is served: an int or ``"forever"``.
``label``
    a name recorded with each request the turn answered.

When no turn matches, the answer is the text ``[scripted server: script exhausted]`` and
``exhausted`` counts it, so a test can assert the agent did not call the model more often than
scripted.

Run as a process: ``python -m stagecrew.testing.scripted_llm --script FILE.json --port N
[--record FILE.jsonl]`` prints the base URL as its first line of stdout and serves until
SIGINT/SIGTERM. Standard library and pydantic only: no litellm in this module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "EXHAUSTED_TEXT",
    "RecordedRequest",
    "ScriptedLLM",
    "ToolCallSpec",
    "Turn",
    "TurnUsage",
    "When",
    "main",
    "normalize_script",
    "text_turn",
    "tool_turn",
]

EXHAUSTED_TEXT = "[scripted server: script exhausted]"
DEFAULT_HANG_CAP = 120.0
_CONTROL_PREFIX = "/_scripted/"
_CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")


# ---------------------------------------------------------------------------------------------
# Script model
# ---------------------------------------------------------------------------------------------


class When(BaseModel):
    """Conditions a request must meet for a turn to answer it (all given ones must hold)."""

    model_config = ConfigDict(extra="forbid")

    contains: str | None = None
    any_contains: str | None = None
    system_contains: str | None = None

    def matches(self, body: Mapping[str, Any]) -> bool:
        """Check this condition against a chat completion request body."""
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            messages = []
        if self.contains is not None:
            last = messages[-1] if messages else {}
            if self.contains not in message_text(last):
                return False
        if self.any_contains is not None and not any(
            self.any_contains in message_text(m) for m in messages
        ):
            return False
        if self.system_contains is not None:
            system = "\n".join(
                message_text(m)
                for m in messages
                if isinstance(m, dict) and m.get("role") in ("system", "developer")
            )
            if self.system_contains not in system:
                return False
        return True


class ToolCallSpec(BaseModel):
    """One scripted tool call; ``raw_arguments`` is sent verbatim (it may be broken JSON)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any] | None = None
    raw_arguments: str | None = None
    id: str | None = None

    @model_validator(mode="after")
    def _one_kind_of_arguments(self) -> ToolCallSpec:
        if self.arguments is not None and self.raw_arguments is not None:
            raise ValueError("give either 'arguments' or 'raw_arguments', not both")
        return self

    def arguments_text(self) -> str:
        """The arguments string exactly as the server sends it."""
        if self.raw_arguments is not None:
            return self.raw_arguments
        return json.dumps(self.arguments if self.arguments is not None else {})


class TurnUsage(BaseModel):
    """Token counts to report; any missing count is estimated from the sizes involved."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    cached_tokens: int | None = Field(default=None, ge=0)


class Turn(BaseModel):
    """One scripted model answer (see the module docstring for every field)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallSpec] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: TurnUsage | None = None
    delay: float = Field(default=0.0, ge=0)
    chunk_delay: float = Field(default=0.0, ge=0)
    chunk_size: int | None = Field(default=None, ge=1)
    status: int | None = Field(default=None, ge=400, le=599)
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    retry_after: float | None = Field(default=None, ge=0)
    headers: dict[str, str] = Field(default_factory=dict)
    hang: bool | int = False
    drop: bool | int = False
    drop_mode: Literal["reset", "eof"] = "reset"
    when: When | None = None
    repeat: int | Literal["forever"] = 1
    label: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Turn:
        if isinstance(self.repeat, int) and self.repeat < 1:
            raise ValueError("'repeat' must be at least 1 or \"forever\"")
        for name in ("hang", "drop"):
            value = getattr(self, name)
            if not isinstance(value, bool) and value < 0:
                raise ValueError(f"'{name}' must be true/false or a chunk count >= 0")
        return self

    @property
    def resolved_finish_reason(self) -> str:
        """The finish reason sent: scripted, else ``tool_calls`` or ``stop``."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


TurnLike = Turn | Mapping[str, Any]
ScriptLike = Sequence[TurnLike] | Mapping[str, Sequence[TurnLike]]


def text_turn(text: str, **kw: Any) -> Turn:
    """A turn answering with plain text: ``text_turn("done", delay=0.2)``."""
    return Turn(text=text, **kw)


def tool_turn(
    name: str, arguments: Mapping[str, Any] | None = None, *, id: str | None = None, **kw: Any
) -> Turn:
    """A turn making one tool call: ``tool_turn("read", {"file_path": "a.py"})``."""
    call = ToolCallSpec(name=name, arguments=dict(arguments or {}), id=id)
    return Turn(tool_calls=[call], **kw)


def _to_turn(item: TurnLike) -> Turn:
    if isinstance(item, Turn):
        return item
    return Turn.model_validate(dict(item))


def normalize_script(script: ScriptLike | None) -> dict[str, list[Turn]]:
    """A list becomes ``{"*": turns}``; a dict keeps its model keys. Validates every turn."""
    if script is None:
        return {}
    if isinstance(script, Mapping):
        out: dict[str, list[Turn]] = {}
        for key, turns in script.items():
            if isinstance(turns, str | bytes | Mapping) or not isinstance(turns, Sequence):
                raise TypeError(f"script queue {key!r} must be a list of turns")
            out[str(key)] = [_to_turn(t) for t in turns]
        return out
    if isinstance(script, str | bytes):
        raise TypeError("a script is a list of turns or a dict of such lists, not a string")
    return {"*": [_to_turn(t) for t in script]}


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------


class RecordedRequest(BaseModel):
    """One request the server received, and which turn answered it.

    ``outcome`` is filled in as the answer goes out: ``ok``, ``exhausted``, ``http_error``,
    ``dropped``, ``hang_timeout``, ``client_gone``, ``server_closed`` or ``bad_request``
    (``None`` while in progress), so cancellation tests can see the client went away.
    """

    seq: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    ts: float
    client_port: int | None = None
    queue: str | None = None
    turn_index: int | None = None
    turn_label: str | None = None
    outcome: str | None = None

    @property
    def model(self) -> str | None:
        """The ``model`` field of the request body, if any."""
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages sent (empty for other requests)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return self.body["messages"]
        return []

    @property
    def last_message_text(self) -> str:
        """Text of the last message, the same text ``when.contains`` matches against."""
        return message_text(self.messages[-1]) if self.messages else ""


def message_text(message: Any) -> str:
    """All text of one chat message: content (string or parts) and any tool-call arguments."""
    if not isinstance(message, dict):
        return ""
    parts: list[str] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(f"{function.get('name', '')} {function.get('arguments', '')}")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Script state
# ---------------------------------------------------------------------------------------------


class _Slot:
    """A turn in a queue and how often it has been served."""

    __slots__ = ("served", "turn")

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.served = 0

    @property
    def available(self) -> bool:
        return self.turn.repeat == "forever" or self.served < self.turn.repeat

    @property
    def left(self) -> int:
        if self.turn.repeat == "forever":
            return 0
        return self.turn.repeat - self.served


@dataclass(frozen=True)
class _Selection:
    """The turn picked for a request: ``index`` is None for the exhausted answer."""

    queue: str | None
    index: int | None
    turn: Turn


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class _Gone(Exception):
    """The client closed the connection, or the server is closing."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    llm: ScriptedLLM

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up is normal here (cancellation tests); anything else is printed."""
        if isinstance(sys.exc_info()[1], ConnectionError | _Gone):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """One connection; keep-alive, chunked streaming, no Nagle delay."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # without it every streamed call costs ~55 ms
    server_version = "ScriptedLLM/1"
    server: _Server

    # -- plumbing --------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.llm._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.llm._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line: tests and the CLI keep stderr for real errors."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_bytes(
        self,
        status: int,
        payload: bytes,
        content_type: str = "application/json",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, value: Any, extra: Mapping[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(value).encode(), extra=extra)

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.server.llm._stopping.wait(seconds):
            raise _Gone("server closing")

    def _client_gone(self) -> bool:
        """True once the peer closed its end (a readable socket with nothing to read)."""
        try:
            poller = select.poll()  # not select.select: that fails for fds above 1024
            poller.register(self.connection, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(0):
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _hang(self, record: RecordedRequest) -> None:
        """Hold the connection, answering nothing, until the client or the server gives up."""
        llm = self.server.llm
        deadline = time.monotonic() + llm.hang_cap
        while time.monotonic() < deadline:
            if llm._stopping.wait(0.02):
                llm._set_outcome(record, "server_closed")
                break
            if self._client_gone():
                llm._set_outcome(record, "client_gone")
                break
        else:
            llm._set_outcome(record, "hang_timeout")
        self.close_connection = True

    def _abort(self) -> None:
        """Cut the connection without finishing the response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- routing ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        llm = self.server.llm
        if path == "/_scripted/health":
            self._send_json(200, llm._health())
            return
        if path == "/_scripted/requests":
            self._send_json(200, [r.model_dump(mode="json") for r in llm.requests])
            return
        record = llm._record(self, None)
        if path in ("/v1/models", "/models"):
            names = sorted({"scripted", *(k for k in llm._queue_names() if k != "*")})
            data = [
                {"id": n, "object": "model", "created": 0, "owned_by": "scripted"} for n in names
            ]
            llm._set_outcome(record, "ok")
            self._send_json(200, {"object": "list", "data": data})
            return
        llm._set_outcome(record, "bad_request")
        self._send_json(404, _error_body(f"no route GET {path}", "invalid_request_error", None))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        llm = self.server.llm
        raw = self._read_body()
        try:
            body: Any = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = raw.decode("utf-8", "replace")
        if path == "/_scripted/script":
            self._control_script(body)
            return
        if path not in _CHAT_PATHS or not isinstance(body, dict):
            record = llm._record(self, body)
            if path not in _CHAT_PATHS:
                status, message = 404, f"no route POST {path}"
            else:
                status, message = 400, "the request body must be a JSON object"
            llm._set_outcome(record, "bad_request")
            self._send_json(status, _error_body(message, "invalid_request_error", None))
            return
        selection, record = llm._select_and_record(self, body)
        try:
            self._answer(body, selection, record)
        except _Gone:
            llm._set_outcome(record, "server_closed", force=True)
            self._abort()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            llm._set_outcome(record, "client_gone", force=True)
            self.close_connection = True

    def _control_script(self, body: Any) -> None:
        if not isinstance(body, dict) or "script" not in body:
            self._send_json(400, {"error": 'send {"script": [...], "mode": "replace"|"append"}'})
            return
        mode = body.get("mode", "replace")
        if mode not in ("replace", "append"):
            self._send_json(400, {"error": "mode must be 'replace' or 'append'"})
            return
        try:
            queues = normalize_script(body["script"])
        except (ValidationError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
            return
        llm = self.server.llm
        if mode == "replace":
            llm.set_script(queues)
        else:
            for key, turns in queues.items():
                llm.add_turns(turns, queue=key)
        self._send_json(200, {"ok": True, **llm._health()})

    # -- answering -------------------------------------------------------------------------

    def _answer(self, body: dict[str, Any], sel: _Selection, record: RecordedRequest) -> None:
        llm = self.server.llm
        turn = sel.turn
        stream = bool(body.get("stream"))
        self._wait(turn.delay)
        if turn.hang is True or (turn.hang is not False and (not stream or turn.hang == 0)):
            self._hang(record)
            return
        if turn.drop is not False and not isinstance(turn.drop, bool) and turn.drop == 0:
            llm._set_outcome(record, "dropped")
            self._abort()
            return
        if turn.status is not None:
            llm._set_outcome(record, "http_error")
            self._answer_error(turn)
            return
        # Outcomes are set just before the last write, so a client holding its answer can
        # already see them; a failing write overrides them with client_gone.
        done = "exhausted" if sel.index is None else "ok"
        if stream:
            self._answer_stream(body, turn, record, done)
        else:
            self._answer_json(body, turn, record, done)

    def _answer_error(self, turn: Turn) -> None:
        status = turn.status or 500
        default_type, default_code, default_message = _ERROR_DEFAULTS.get(
            status, ("server_error", None, f"scripted HTTP {status}")
        )
        payload = _error_body(
            turn.error_message or default_message,
            turn.error_type or default_type,
            turn.error_code if turn.error_code is not None else default_code,
        )
        extra = dict(turn.headers)
        if turn.retry_after is not None:
            value = turn.retry_after
            extra["Retry-After"] = str(int(value)) if float(value).is_integer() else str(value)
        self._send_json(status, payload, extra=extra)

    def _answer_json(
        self, body: dict[str, Any], turn: Turn, record: RecordedRequest, done: str
    ) -> None:
        llm = self.server.llm
        message: dict[str, Any] = {"role": "assistant", "content": turn.text}
        if turn.reasoning is not None:
            message["reasoning_content"] = turn.reasoning
        calls = llm._call_ids(turn, record.seq)
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": spec.name, "arguments": spec.arguments_text()},
                }
                for call_id, spec in zip(calls, turn.tool_calls, strict=True)
            ]
        elif turn.text is None:
            message["content"] = ""
        response = {
            "id": f"chatcmpl-scripted-{record.seq}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": turn.resolved_finish_reason}
            ],
            "usage": _usage(body, turn),
        }
        payload = json.dumps(response).encode()
        if turn.drop is not False:
            # Promise the whole body, deliver part of it, hang up.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            llm._set_outcome(record, "dropped")
            self.wfile.write(payload[: max(1, len(payload) // 2)])
            self._abort()
            return
        llm._set_outcome(record, done)
        self._send_bytes(200, payload, extra=turn.headers)

    def _answer_stream(
        self, body: dict[str, Any], turn: Turn, record: RecordedRequest, done: str
    ) -> None:
        llm = self.server.llm
        events = list(_stream_events(body, turn, llm._call_ids(turn, record.seq), record.seq))
        n_data = len(events) - 1  # the last event is [DONE]
        # Both are clamped so they always happen before [DONE]: a drop or stall is never a no-op.
        drop_after: int | None = None
        if turn.drop is True:
            drop_after = max(1, n_data // 2)
        elif turn.drop is not False:
            drop_after = min(int(turn.drop), n_data)
        hang_after = None if isinstance(turn.hang, bool) else min(int(turn.hang), n_data)

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for key, value in turn.headers.items():
            self.send_header(key, value)
        self.end_headers()
        for i, event in enumerate(events):
            if drop_after is not None and i >= drop_after:
                llm._set_outcome(record, "dropped")
                if turn.drop_mode == "eof":
                    with contextlib.suppress(OSError):
                        self.wfile.write(b"0\r\n\r\n")
                self._abort()
                return
            if hang_after is not None and i >= hang_after:
                self._hang(record)
                return
            if i > 0:
                self._wait(turn.chunk_delay)
            if i == n_data:
                llm._set_outcome(record, done)
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")


_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request (scripted)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (scripted)."),
    403: ("invalid_request_error", None, "Forbidden (scripted)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (scripted)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (scripted)."),
    500: ("server_error", None, "The server had an error processing your request (scripted)."),
    502: ("server_error", None, "Bad gateway (scripted)."),
    503: ("server_error", None, "The engine is currently overloaded (scripted)."),
}


def _error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _pieces(text: str, size: int | None) -> list[str]:
    """Cut ``text`` into chunks: ``size`` characters each, or about eight pieces by default."""
    if not text:
        return []
    step = size if size is not None else max(1, math.ceil(len(text) / 8))
    return [text[i : i + step] for i in range(0, len(text), step)]


def _estimate_tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def _usage(body: Mapping[str, Any], turn: Turn) -> dict[str, Any]:
    """Scripted token counts, with missing ones estimated at ~4 characters per token."""
    scripted = turn.usage or TurnUsage()
    if scripted.prompt_tokens is not None:
        prompt = scripted.prompt_tokens
    else:
        size = len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("tools", [])))
        prompt = _estimate_tokens(size)
    if scripted.completion_tokens is not None:
        completion = scripted.completion_tokens
    else:
        size = len(turn.text or "") + len(turn.reasoning or "")
        size += sum(len(c.name) + len(c.arguments_text()) for c in turn.tool_calls)
        completion = _estimate_tokens(size)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if scripted.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": scripted.cached_tokens}
    return usage


def _stream_events(
    body: Mapping[str, Any], turn: Turn, call_ids: list[str], seq: int
) -> Iterator[str]:
    """The SSE events of one streamed answer, OpenAI's order and shapes, ending in [DONE]."""
    base = {
        "id": f"chatcmpl-scripted-{seq}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
    }

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in _pieces(turn.reasoning or "", turn.chunk_size):
        yield event({"reasoning_content": piece})
    for piece in _pieces(turn.text or "", turn.chunk_size):
        yield event({"content": piece})
    for index, (call_id, spec) in enumerate(zip(call_ids, turn.tool_calls, strict=True)):
        head = {"index": index, "id": call_id, "type": "function"}
        yield event({"tool_calls": [{**head, "function": {"name": spec.name, "arguments": ""}}]})
        for piece in _pieces(spec.arguments_text(), turn.chunk_size):
            yield event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield event({}, turn.resolved_finish_reason)
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        usage_chunk = {**base, "choices": [], "usage": _usage(body, turn)}
        yield f"data: {json.dumps(usage_chunk)}\n\n"
    yield "data: [DONE]\n\n"


# ---------------------------------------------------------------------------------------------
# Public server object
# ---------------------------------------------------------------------------------------------


class ScriptedLLM:
    """A running scripted model server; starts serving in the constructor.

    ``with ScriptedLLM([text_turn("hi")]) as llm:`` then point litellm at ``llm.base_url``
    (``model="openai/<queue name>"``, any ``api_key``). Thread-safe: turns can be added and
    requests inspected while agents are calling it.
    """

    def __init__(
        self,
        script: ScriptLike | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record_to: str | Path | None = None,
        hang_cap: float = DEFAULT_HANG_CAP,
    ) -> None:
        self.hang_cap = hang_cap
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._queues: dict[str, list[_Slot]] = {}
        self._requests: list[RecordedRequest] = []
        self._exhausted = 0
        self._connections: set[socket.socket] = set()
        self.set_script(normalize_script(script))
        self._server = _Server((host, port), _Handler)
        self._server.llm = self
        self._record_file = open(record_to, "a", encoding="utf-8") if record_to else None  # noqa: SIM115
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scripted-llm-{self.port}",
            daemon=True,
        )
        self._closed = False
        self._thread.start()

    # -- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what litellm's ``api_base`` wants."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def url(self) -> str:
        """The server root, for the ``/_scripted/...`` control endpoints."""
        return f"http://{self.host}:{self.port}"

    # -- script ----------------------------------------------------------------------------

    def set_script(self, script: ScriptLike | dict[str, list[Turn]] | None) -> None:
        """Replace every queue with ``script``."""
        queues = normalize_script(script)
        with self._changed:
            self._queues = {k: [_Slot(t) for t in v] for k, v in queues.items()}

    def add_turns(self, *turns: TurnLike | Sequence[TurnLike], queue: str = "*") -> None:
        """Append turns to a queue: ``add_turns(t1, t2)`` or ``add_turns([t1, t2])``."""
        flat: list[Turn] = []
        for item in turns:
            if isinstance(item, Turn | Mapping):
                flat.append(_to_turn(item))
            else:
                flat.extend(_to_turn(t) for t in item)
        with self._changed:
            self._queues.setdefault(queue, []).extend(_Slot(t) for t in flat)

    def _queue_names(self) -> list[str]:
        with self._lock:
            return list(self._queues)

    # -- inspection ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received (control endpoints excluded), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Only the chat completion requests."""
        return [r for r in self.requests if r.path.split("?", 1)[0] in _CHAT_PATHS]

    @property
    def exhausted(self) -> int:
        """How many chat requests found no turn and got the exhausted answer."""
        with self._lock:
            return self._exhausted

    @property
    def remaining(self) -> int:
        """How many servings the finite turns still have (``forever`` turns count 0)."""
        with self._lock:
            return sum(slot.left for slots in self._queues.values() for slot in slots)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived; raise TimeoutError saying how many did.

        This blocks the calling thread: from async code use ``await asyncio.to_thread(...)``,
        or the client on the same event loop can never send its request.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"scripted server got {len(self._requests)} of {n} requests "
                        f"within {timeout} s"
                    )
                self._changed.wait(left)
            return list(self._requests)

    def wait_for_outcome(self, seq: int, timeout: float = 10.0) -> str:
        """Block until request number ``seq`` (1-based) has an outcome; return it.

        For cancellation tests: after the client gives up, the server sees ``client_gone``.
        Blocking, like :meth:`wait_for_requests`: use ``asyncio.to_thread`` from async code.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if len(self._requests) >= seq and self._requests[seq - 1].outcome is not None:
                    return self._requests[seq - 1].outcome
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"request {seq} got no outcome within {timeout} s")
                self._changed.wait(left)

    def _health(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ok": True,
                "requests": len(self._requests),
                "exhausted": self._exhausted,
                "remaining": sum(s.left for q in self._queues.values() for s in q),
                "queues": {k: len(v) for k, v in self._queues.items()},
            }

    # -- used by the handler ---------------------------------------------------------------

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _new_record(self, handler: _Handler, body: Any) -> RecordedRequest:
        client = handler.client_address
        return RecordedRequest(
            seq=len(self._requests) + 1,
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            ts=time.time(),
            client_port=client[1] if isinstance(client, tuple) and len(client) > 1 else None,
        )

    def _store(self, record: RecordedRequest) -> None:
        """Append under the lock (held by the caller) and wake waiters; write the JSON line."""
        self._requests.append(record)
        if self._record_file is not None:
            self._record_file.write(record.model_dump_json() + "\n")
            self._record_file.flush()
        self._changed.notify_all()

    def _record(self, handler: _Handler, body: Any) -> RecordedRequest:
        with self._changed:
            record = self._new_record(handler, body)
            self._store(record)
            return record

    def _select_and_record(
        self, handler: _Handler, body: dict[str, Any]
    ) -> tuple[_Selection, RecordedRequest]:
        """Pick the turn for a chat request and record both, atomically."""
        model = body.get("model")
        with self._changed:
            key = model if isinstance(model, str) and model in self._queues else "*"
            selection: _Selection | None = None
            for index, slot in enumerate(self._queues.get(key, [])):
                if slot.available and (slot.turn.when is None or slot.turn.when.matches(body)):
                    slot.served += 1
                    selection = _Selection(queue=key, index=index, turn=slot.turn)
                    break
            if selection is None:
                self._exhausted += 1
                selection = _Selection(queue=None, index=None, turn=Turn(text=EXHAUSTED_TEXT))
            record = self._new_record(handler, body)
            record.queue = selection.queue
            record.turn_index = selection.index
            record.turn_label = selection.turn.label
            self._store(record)
            return selection, record

    def _set_outcome(self, record: RecordedRequest, outcome: str, *, force: bool = False) -> None:
        with self._changed:
            if record.outcome is None or force:
                record.outcome = outcome
            self._changed.notify_all()

    def _call_ids(self, turn: Turn, seq: int) -> list[str]:
        return [spec.id or f"call_{seq}_{i}" for i, spec in enumerate(turn.tool_calls)]

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving, end hanging and keep-alive connections, free the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        if self._record_file is not None:
            with self._lock:
                self._record_file.close()
                self._record_file = None

    def __enter__(self) -> ScriptedLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ScriptedLLM({self.base_url!r}, requests={len(self._requests)})"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a script file until SIGINT/SIGTERM; the first stdout line is the base URL."""
    parser = argparse.ArgumentParser(
        prog="python -m stagecrew.testing.scripted_llm",
        description="Scripted OpenAI-compatible model server for tests.",
    )
    parser.add_argument("--script", type=Path, help="JSON file: a list of turns or a dict")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--record", type=Path, help="append every request here as a JSON line")
    args = parser.parse_args(argv)

    script: Any = None
    if args.script is not None:
        try:
            script = json.loads(args.script.read_text(encoding="utf-8"))
            queues = normalize_script(script)
        except (OSError, json.JSONDecodeError, ValidationError, TypeError) as exc:
            print(f"scripted_llm: cannot load {args.script}: {exc}", file=sys.stderr)
            return 2
    else:
        queues = {}

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    llm = ScriptedLLM(queues, host=args.host, port=args.port, record_to=args.record)
    try:
        print(llm.base_url, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
