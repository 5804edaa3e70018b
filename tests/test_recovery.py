"""Recovery on its own (no Ray): a log cut off by a dead supervisor gets its stop records,
and the processes its actors left are swept — the same functions the restarted supervisor
and ``crew down`` call."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil

from stagecrew.messages import (
    ActorRole,
    ActorStarted,
    Envelope,
    SessionFinished,
    SessionStarted,
    StopReason,
)
from stagecrew.orchestrator import recovery
from stagecrew.orchestrator.eventlog import EventLog, read_events, session_dir
from stagecrew.orchestrator.procs import ACTOR_ID_VAR


def _log(workspace: Path, sid: str, *bodies: object) -> Path:
    path = session_dir(workspace, sid) / "events.jsonl"
    log = EventLog(path)
    for body in bodies:
        log.append(Envelope(session=sid, sender="supervisor", body=body))
    log.close()
    return path


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_cut_off_session_is_ended_and_its_tool_processes_swept(tmp_path: Path) -> None:
    home, workspace = tmp_path / "home", tmp_path / "ws"
    sid, actor = "s1", "s1-primary"
    tool = subprocess.Popen(
        ["sleep", "300"], env={**os.environ, ACTOR_ID_VAR: actor}, start_new_session=True
    )
    started = SessionStarted(prompt="p", workspace=str(workspace), profile="build", model="m")
    path = _log(
        workspace, sid, started, ActorStarted(actor_id=actor, role=ActorRole.PRIMARY, model="m")
    )
    finished_elsewhere = _log(
        workspace,
        "s2",
        started,
        SessionFinished(stop_reason=StopReason.DONE),
    )
    recovery.index_session(home, sid, str(workspace), "cluster-a")
    recovery.index_session(home, "s2", str(workspace), "cluster-a")
    recovery.index_session(home, "s3", str(workspace), "cluster-b")  # another cluster's
    try:
        ended = recovery.recover(home, "cluster-a", recovery.SUPERVISOR_RESTART)
        tool.wait(timeout=5)
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
    assert [cut.session for cut, _ in ended] == ["s1"]
    assert _gone(tool.pid)
    events = list(read_events(path))
    assert [e.body.kind for e in events] == [
        "session_started",
        "actor_started",
        "actor_failed",
        "session_finished",
    ]
    assert events[2].body.cause == "supervisor_restart"
    assert events[-1].body.stop_reason == "error"
    assert "crew resume s1" in events[-1].body.error
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert len(list(read_events(finished_elsewhere))) == 2  # untouched
    # Idempotent: a second recovery finds nothing left to end.
    assert recovery.recover(home, "cluster-a", recovery.SUPERVISOR_RESTART) == []


def test_a_recycled_pid_is_never_taken_for_a_dead_host(tmp_path: Path) -> None:
    from stagecrew.orchestrator.procs import same_head_process

    me = os.getpid()
    assert not same_head_process(me, "some-other-head", time.time())
    assert not same_head_process(me, None, time.time())
    # Started after the event that named it: a different process with a reused pid.
    os.environ["STAGECREW_HEAD_ID"] = "head-x"
    try:
        child = subprocess.Popen(["sleep", "5"])
        while psutil.Process(child.pid).cmdline()[:1] != ["sleep"]:  # exec'd, env is its own
            time.sleep(0.01)
        try:
            assert same_head_process(child.pid, "head-x", time.time())
            assert not same_head_process(child.pid, "head-x", time.time() - 3600)
        finally:
            child.kill()
            child.wait()
    finally:
        del os.environ["STAGECREW_HEAD_ID"]
