"""Background sessions: the work outlives the CLI; attach replays then follows; Ctrl-C detaches."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import crew, wait_for

from stagecrew.orchestrator.eventlog import read_events, session_dir
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray


def config(repo: Path, llm: ScriptedLLM) -> None:
    (repo / ".stagecrew").mkdir(exist_ok=True)
    cfg = {"models": {"primary": {"model": "openai/bg", "api_base": llm.base_url}}}
    (repo / ".stagecrew" / "config.json").write_text(json.dumps(cfg))


def actor_states(repo: Path, sid: str) -> list[str]:
    proc = crew("ps", sid, "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    return [a["state"] for a in json.loads(proc.stdout)["actors"]]


def test_background_session_survives_the_cli_and_can_be_attached(
    ray_head: object, git_repo: Path
) -> None:
    script = [
        {"tool_calls": [{"name": "ls", "arguments": {}}]},
        {"text": "Finished in the background.", "delay": 4},
    ]
    with ScriptedLLM(script) as llm:
        config(git_repo, llm)
        t0 = time.monotonic()
        proc = crew("run", "--background", "Work quietly.", cwd=git_repo)
        returned = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        sid = proc.stdout.strip()
        assert len(sid) == 12
        # The CLI process is gone; the session is still running on the head.
        assert "running" in actor_states(git_repo, sid)
        attach = crew("attach", sid, cwd=git_repo, timeout=60)
    assert returned < 15
    assert attach.returncode == 0, attach.stderr
    assert "Finished in the background." in attach.stdout
    assert "ls(" in attach.stdout  # replayed what happened before attaching
    kinds = [e.body.kind for e in read_events(session_dir(git_repo, sid) / "events.jsonl")]
    assert kinds[-1] == "session_finished"


def test_ctrl_c_on_attach_detaches_without_cancelling(ray_head: object, git_repo: Path) -> None:
    with ScriptedLLM([{"text": "slow", "delay": 60}]) as llm:
        config(git_repo, llm)
        sid = crew("run", "--background", "Take your time.", cwd=git_repo).stdout.strip()
        attach = subprocess.Popen(
            [sys.executable, "-m", "stagecrew.cli.main", "attach", sid],
            cwd=git_repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: llm.requests, timeout=30)
        time.sleep(1.0)  # attached and following
        attach.send_signal(signal.SIGINT)
        _out, err = attach.communicate(timeout=20)
        assert attach.returncode == 0, err
        assert "detached" in err
        assert "running" in actor_states(git_repo, sid)  # still working

        cancel = crew("cancel", sid, cwd=git_repo)
        assert cancel.returncode == 0 and f"{sid}-primary" in cancel.stdout
        log = session_dir(git_repo, sid) / "events.jsonl"
        wait_for(lambda: any(e.body.kind == "session_finished" for e in read_events(log)), 20)
    finished = next(e.body for e in read_events(log) if e.body.kind == "session_finished")
    assert finished.stop_reason == "cancelled"
    logs = crew("logs", sid, cwd=git_repo)
    assert logs.returncode == 0 and "cancelled" in logs.stdout
