"""A supervisor that dies mid-session is replaced; the new one rebuilds the tree from the logs
and marks what died with it, in the session's own log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import start_session, wait_for

from stagecrew.orchestrator import runtime
from stagecrew.orchestrator.eventlog import read_events, session_dir
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray


def test_supervisor_restart_mid_session(ray_head: object, git_repo: Path) -> None:
    import ray

    with ScriptedLLM({"slow": [{"text": "never seen", "delay": 60}]}) as llm:
        cfg = {"models": {"primary": {"model": "openai/slow", "api_base": llm.base_url}}}
        client, sid = start_session(git_repo, "Work.", {}, config_json=cfg)
        wait_for(lambda: llm.requests, timeout=30)
        old_pid = client.call("ping")["pid"]

        record = runtime.read_record()
        ray.init(
            address=record.gcs_address,
            namespace="stagecrew",
            log_to_driver=False,
            logging_level=logging.ERROR,
            _node_ip_address="127.0.0.1",
        )
        try:
            ray.kill(ray.get_actor("stagecrew-supervisor"), no_restart=True)
        finally:
            ray.shutdown()

        fresh = runtime.connect()  # notices the dead control port, bootstraps a new supervisor
        info = fresh.call("ping")
    assert info["pid"] != old_pid
    assert sid in info["recovered"]
    events = list(read_events(session_dir(git_repo, sid) / "events.jsonl"))
    failed = [e.body for e in events if e.body.kind == "actor_failed"]
    assert failed and failed[0].cause == "supervisor_restart"
    assert failed[0].actor_id == f"{sid}-primary"
    assert events[-1].body.kind == "session_finished"
    assert f"crew resume {sid}" in (events[-1].body.error or "")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # The new supervisor serves the recovered session's tree.
    rows = fresh.call("ps", session=sid)["actors"]
    assert [r["state"] for r in rows] == ["failed"]
