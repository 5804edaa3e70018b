"""The protocol round-trips through JSON, and the event log keeps order and drops secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stagecrew.messages import (
    MESSAGE_ADAPTER,
    ActorFinished,
    Envelope,
    SessionFinished,
    StopReason,
    ToolCall,
    ToolFinished,
    Usage,
)
from stagecrew.orchestrator.eventlog import EventLog, last_seq, read_events


def test_envelope_round_trip_keeps_the_concrete_type() -> None:
    env = Envelope(
        session="s1",
        sender="a1",
        body=ActorFinished(
            actor_id="a1", stop_reason=StopReason.STUCK, usage=Usage(prompt_tokens=3)
        ),
    )
    back = Envelope.from_json(env.to_json())
    assert isinstance(back.body, ActorFinished)
    assert back.body.stop_reason is StopReason.STUCK
    assert back == env


def test_every_stop_reason_is_explicit_and_success_is_narrow() -> None:
    assert {r.value for r in StopReason} >= {
        "done",
        "goal_met",
        "max_steps",
        "budget",
        "timeout",
        "cancelled",
        "stuck",
        "model_format_failures",
        "judge_rounds_exhausted",
        "error",
    }
    assert {r for r in StopReason if r.success} == {StopReason.DONE, StopReason.GOAL_MET}
    with pytest.raises(ValidationError):
        SessionFinished.model_validate({"kind": "session_finished"})  # no stop reason, no message


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValidationError):
        MESSAGE_ADAPTER.validate_python({"kind": "nonsense"})


def test_event_log_orders_resumes_and_redacts(tmp_path: Path) -> None:
    path = tmp_path / "s" / "events.jsonl"
    log = EventLog(path, secrets=["sk-very-secret-123"])
    for i in range(3):
        log.append(
            Envelope(
                session="s",
                sender="a",
                body=ToolFinished(
                    actor_id="a", call_id=str(i), tool="bash", content=f"out {i} sk-very-secret-123"
                ),
            )
        )
    log.close()
    assert "sk-very-secret-123" not in path.read_text()
    assert [e.seq for e in read_events(path)] == [1, 2, 3]
    # A torn last line (a crash mid-write) is skipped, and a new writer continues the count.
    with open(path, "a") as fh:
        fh.write('{"id": "torn", "sess')
    assert last_seq(path) == 3
    assert [e.seq for e in read_events(path, after_seq=1)] == [2, 3]
    log2 = EventLog(path)
    log2.append(
        Envelope(
            session="s",
            sender="a",
            body=ToolFinished(actor_id="a", call_id="x", tool="t", content=""),
        )
    )
    log2.close()
    assert [e.seq for e in read_events(path)][-1] == 4


def test_tool_call_keeps_raw_arguments() -> None:
    call = ToolCall(id="c1", name="edit", arguments="{'bad': json,}")
    assert ToolCall.model_validate_json(call.model_dump_json()).arguments == "{'bad': json,}"
