"""The control channel answers every request with one line: typed requests reach their
handler, and garbage gets an error reply instead of a silent close."""

from __future__ import annotations

import json
import socket

import pytest

from stagecrew.orchestrator import runtime
from stagecrew.orchestrator.control_api import Cancel, Ps, parse_request

pytestmark = pytest.mark.ray


def _raw(payload: bytes) -> dict[str, object]:
    record = runtime.read_record()
    assert record is not None
    with socket.create_connection((record.control_host, record.control_port), timeout=10) as s:
        s.sendall(payload)
        with s.makefile("rb") as fh:
            line = fh.readline()
    assert line, "the supervisor closed the connection without a reply"
    return json.loads(line)


def _token() -> str:
    record = runtime.read_record()
    assert record is not None
    return record.token


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"not json at all\n", "not JSON"),
        (b"[1, 2, 3]\n", "JSON object"),
        (b'"a string"\n', "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "not JSON"),
        (b'{"op": "ps"}\n', "bad token"),
    ],
)
def test_garbage_gets_a_one_line_error(ray_head: object, payload: bytes, says: str) -> None:
    reply = _raw(payload)
    assert reply["ok"] is False and says in str(reply["error"])


def test_a_line_over_the_limit_is_refused_with_a_reply(ray_head: object) -> None:
    from stagecrew.orchestrator.control_server import LINE_LIMIT

    reply = _raw(b"x" * (LINE_LIMIT + 10) + b"\n")
    assert reply["ok"] is False and "longer than" in str(reply["error"])


def test_unknown_op_and_wrong_field_type_name_what_is_wrong(ray_head: object) -> None:
    token = _token()
    reply = _raw(json.dumps({"op": "explode", "token": token}).encode() + b"\n")
    assert reply == {"ok": False, "error": "unknown op 'explode'"}
    reply = _raw(json.dumps({"op": "cancel", "token": token, "target": 42}).encode() + b"\n")
    assert reply["ok"] is False and "target" in str(reply["error"])
    reply = _raw(json.dumps({"op": "cancel", "token": token, "target": "nope"}).encode() + b"\n")
    assert reply == {"ok": False, "error": "no session or actor 'nope'"}


def test_the_typed_client_and_the_server_agree(ray_head: object) -> None:
    from stagecrew.orchestrator.control import ControlError

    client = runtime.connect()
    assert client.ping()["ok"] is True
    assert isinstance(client.ps()["actors"], list)
    with pytest.raises(ControlError, match="no session or actor 'ghost'"):
        client.cancel("ghost")
    with pytest.raises(ControlError, match="unknown session ghost"):
        client.session_info("ghost")


def test_requests_parse_by_op() -> None:
    assert isinstance(parse_request({"op": "ps"}), Ps)
    assert parse_request({"op": "cancel", "target": "x", "kill": True}) == Cancel(
        target="x", kill=True
    )
    with pytest.raises(TypeError):
        parse_request([1])
